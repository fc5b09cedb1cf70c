import { randomToken } from "../../shared/util/random-token.js";

export function newInstanceName(): string {
  return randomToken(8);
}
