/**
 * REPORTDATA binding between a verifier's nonce and the guest's SSH host keys, so that a tenant who
 * verifies the quote also verifies the host key it is talking to.
 *
 *   REPORTDATA = SHA-512( "cvm-attest-v1\0"
 *                         || u32be(len(nonce)) || nonce
 *                         || for each key: u32be(len(k)) || k )
 *
 * where each k is the UTF-8 of one SSH host public key reduced to "<type> <base64>" (the comment
 * and surrounding whitespace are dropped, because the party checking the key sees it over SSH without
 * one), and the keys are sorted by their bytes so the order in which files were read does not matter.
 * Every field is length-prefixed, so no bytes can move between the nonce and the keys. 64 bytes, the
 * size of the TD report's REPORTDATA.
 */
import { createHash } from "node:crypto";

export const REPORT_DATA_DOMAIN = Buffer.from("cvm-attest-v1\0", "latin1");

/** "<type> <base64> [comment]" → "<type> <base64>". */
export function canonicalHostKey(line: string): string {
  const parts = line.trim().split(/\s+/);
  if (parts.length < 2 || !parts[0] || !parts[1]) throw new Error(`not an SSH public key line: "${line.slice(0, 40)}"`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(parts[1])) throw new Error(`SSH public key "${parts[0]}" has invalid base64`);
  return `${parts[0]} ${parts[1]}`;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export function reportDataFor(nonce: Buffer, sshHostKeys: string[]): Buffer {
  const keys = sshHostKeys.map((k) => Buffer.from(canonicalHostKey(k), "utf8")).sort(Buffer.compare);
  const h = createHash("sha512").update(REPORT_DATA_DOMAIN).update(u32(nonce.length)).update(nonce);
  for (const k of keys) h.update(u32(k.length)).update(k);
  return h.digest();
}
