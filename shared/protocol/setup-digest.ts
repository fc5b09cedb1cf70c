import { createHash } from "node:crypto";
import type { SetupParams } from "./messages.js";

/** SHA-256 (hex) over the setup parameters in a fixed field order; both sides compute it the same way. */
export function setupDigest(p: SetupParams): string {
  const fields = [p.public_key, p.agent, p.inference_model, p.gateway_address, p.instance_name];
  const h = createHash("sha256");
  for (const f of fields) {
    const b = Buffer.from(f, "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    h.update(len).update(b);
  }
  return h.digest("hex");
}
