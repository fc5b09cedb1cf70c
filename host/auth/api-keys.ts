import { hash, timingSafeEqual } from "node:crypto";
import { randomToken } from "../../shared/util/random-token.js";

/** API keys are `ca_<8>_<18>`, lowercase alphanumerics: the prefix is a lookup id, the secret is only stored hashed. */
export const API_KEY_PATTERN = /^ca_([a-z0-9]{8})_([a-z0-9]{18})$/;

/** SHA-256 of the secret; the one-shot `hash` because it runs on every authenticated request. */
export function hashSecret(secret: string): Buffer {
  return hash("sha256", secret, "buffer");
}

export function newApiKey(): { key: string; prefix: string; secretHash: Buffer } {
  const prefix = randomToken(8);
  const secret = randomToken(18);
  return { key: `ca_${prefix}_${secret}`, prefix, secretHash: hashSecret(secret) };
}

export function parseApiKey(token: string): { prefix: string; secret: string } | null {
  const m = API_KEY_PATTERN.exec(token);
  return m ? { prefix: m[1]!, secret: m[2]! } : null;
}

export function secretMatches(secret: string, storedHash: Buffer): boolean {
  const h = hashSecret(secret);
  return h.length === storedHash.length && timingSafeEqual(h, storedHash);
}
