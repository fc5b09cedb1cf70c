import { randomToken } from "../../shared/util/random-token.js";

export const INSTANCE_NAME_PATTERN = /^[a-z0-9]{8}$/;

export function newInstanceName(): string {
  return randomToken(8);
}
