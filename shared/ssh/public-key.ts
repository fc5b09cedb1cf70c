import { createHash } from "node:crypto";

/**
 * Parses one OpenSSH public key line ("type base64 [comment]") by decoding the wire format, so a key
 * whose text says ed25519 but whose blob says otherwise, or whose point has the wrong size, is refused.
 */

export type AcceptedKeyType = "ssh-ed25519" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521";

export interface ParsedPublicKey {
  type: AcceptedKeyType;
  blob: Buffer;
  comment: string;
  /** OpenSSH-style fingerprint: "SHA256:" + unpadded base64 of SHA-256(blob). */
  fingerprint: string;
  /** "type base64 [comment]" rebuilt from the parsed parts (single spaces, no trailing newline). */
  canonical: string;
}

export class PublicKeyError extends Error {
  override name = "PublicKeyError";
}

const ECDSA_CURVES: Record<string, { curve: string; pointLen: number }> = {
  "ecdsa-sha2-nistp256": { curve: "nistp256", pointLen: 65 },
  "ecdsa-sha2-nistp384": { curve: "nistp384", pointLen: 97 },
  "ecdsa-sha2-nistp521": { curve: "nistp521", pointLen: 133 },
};

const MAX_LINE = 8192;

function readString(buf: Buffer, off: number): { value: Buffer; next: number } {
  if (off + 4 > buf.length) throw new PublicKeyError("key blob is truncated");
  const len = buf.readUInt32BE(off);
  if (off + 4 + len > buf.length) throw new PublicKeyError("key blob is truncated");
  return { value: buf.subarray(off + 4, off + 4 + len), next: off + 4 + len };
}

export function fingerprintOf(blob: Buffer): string {
  return "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
}

export function parsePublicKey(input: unknown): ParsedPublicKey {
  if (typeof input !== "string") throw new PublicKeyError("must be a string");
  if (input.length > MAX_LINE) throw new PublicKeyError("is too long");
  const line = input.replace(/\r?\n$/, "");
  if (/[\r\n]/.test(line)) throw new PublicKeyError("must be exactly one key (one line)");
  if (line.trim().length === 0) throw new PublicKeyError("is empty");
  const parts = line.trim().split(/[ \t]+/);
  const typeText = parts[0]!;
  if (typeText === "ssh-rsa" || typeText.startsWith("rsa-sha2")) throw new PublicKeyError("ssh-rsa keys are not accepted; use ed25519 or ecdsa");
  if (typeText === "ssh-dss") throw new PublicKeyError("DSA keys are not accepted; use ed25519 or ecdsa");
  if (typeText !== "ssh-ed25519" && !(typeText in ECDSA_CURVES)) {
    // A known-hosts style options prefix (from="...", command="...") lands here too.
    throw new PublicKeyError("must start with ssh-ed25519 or ecdsa-sha2-nistp256/384/521 (no options prefix)");
  }
  const b64 = parts[1];
  if (!b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) throw new PublicKeyError("key data is not valid base64");
  const blob = Buffer.from(b64, "base64");
  const t = readString(blob, 0);
  if (t.value.toString("latin1") !== typeText) throw new PublicKeyError("key type inside the key data does not match its label");
  let off = t.next;
  if (typeText === "ssh-ed25519") {
    const pk = readString(blob, off);
    if (pk.value.length !== 32) throw new PublicKeyError("ed25519 key must be 32 bytes");
    off = pk.next;
  } else {
    const spec = ECDSA_CURVES[typeText]!;
    const curve = readString(blob, off);
    if (curve.value.toString("latin1") !== spec.curve) throw new PublicKeyError("ecdsa curve name does not match key type");
    const q = readString(blob, curve.next);
    if (q.value.length !== spec.pointLen || q.value[0] !== 0x04) throw new PublicKeyError("ecdsa key must be an uncompressed point of the right size");
    off = q.next;
  }
  if (off !== blob.length) throw new PublicKeyError("key data has trailing bytes");
  const comment = parts.slice(2).join(" ");
  if (/[^\x20-\x7e]/.test(comment)) throw new PublicKeyError("comment contains control or non-ASCII characters");
  const type = typeText as AcceptedKeyType;
  return { type, blob, comment, fingerprint: fingerprintOf(blob), canonical: comment ? `${type} ${b64} ${comment}` : `${type} ${b64}` };
}
