import { randomToken } from "../auth/api-keys.js";

export const INSTANCE_NAME_PATTERN = /^[a-z0-9]{8}$/;

export function newInstanceName(): string {
  return randomToken(8);
}
