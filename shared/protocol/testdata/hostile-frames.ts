import { crc32 } from "node:zlib";
import { FRAME_HEADER_LEN, FRAME_MAGIC } from "../frame.js";

/**
 * What a root tenant can write on the agent channel to make the host's decoder work (issue 15).
 * Plain byte builders, used by the decoder's unit tests and by the hostile-guest attacker processes.
 */

/** A header with a valid header CRC that announces `length` payload bytes with checksum `payloadCrc`. */
export function forgedHeader(length: number, payloadCrc = 0): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_LEN);
  FRAME_MAGIC.copy(h, 0);
  h.writeUInt32BE(length >>> 0, 4);
  h.writeUInt32BE(payloadCrc >>> 0, 8);
  h.writeUInt32BE(crc32(h.subarray(0, 12)), 12);
  return h;
}

/**
 * The CRC bomb: a valid header every 16 bytes, each claiming a payload that runs to the end of the
 * buffer and never matches its checksum. A decoder that skips one byte per mismatch and re-checks the
 * next header checksums ~N²/32 bytes.
 */
export function crcBomb(totalBytes: number): Buffer {
  const n = Math.floor(totalBytes / FRAME_HEADER_LEN);
  const out = Buffer.alloc(n * FRAME_HEADER_LEN);
  for (let i = 0; i < n; i++) forgedHeader((n - i - 1) * FRAME_HEADER_LEN).copy(out, i * FRAME_HEADER_LEN);
  return out;
}
