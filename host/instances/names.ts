import { randomToken } from "../auth/api-keys.js";

export function newInstanceName(): string {
  return randomToken(8);
}
