import { isIP } from "node:net";
import { z } from "zod";
import type { Value } from "../../shared/config/settings.js";

/** Value types only cvmd's settings use; the generic ones are in shared/config/settings.ts. */

/** Dollars with cents, e.g. 200.00. */
export const usdCents: Value<string> = z.string().regex(/^\d{1,9}\.\d{2}$/, { error: "expected dollars with cents, e.g. 200.00" });

/** An address, or an address/prefix within its family's length. */
export const addressOrCidr: Value<string> = z.string().refine(
  (v) => {
    const [addr, bits, extra] = v.split("/");
    const family = isIP(addr ?? "");
    if (!family || extra !== undefined) return false;
    if (bits === undefined) return true;
    return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
  },
  { error: "expected comma-separated IP addresses or CIDRs, e.g. 127.0.0.1,10.0.0.0/8" },
);

/** An IPv4 network, a.b.c.d/len. */
export const ipv4Cidr: Value<string> = z.string().refine(
  (v) => {
    const m = /^([\d.]+)\/(\d{1,2})$/.exec(v);
    return !!m && isIP(m[1]!) === 4 && Number(m[2]) <= 32;
  },
  { error: "expected an IPv4 network such as 10.77.0.0/24" },
);

export const ipAddress: Value<string> = z.string().refine((v) => isIP(v) !== 0, { error: "expected an IP address such as 127.0.0.1" });

export function httpUrl(example: string): Value<string> {
  return z.string().refine(
    (v) => {
      try {
        return ["http:", "https:"].includes(new URL(v).protocol);
      } catch {
        return false;
      }
    },
    { error: `expected an http(s) URL, e.g. ${example}` },
  );
}

/** A PostgreSQL connection URL; what follows the scheme is for the server to judge when cvmd connects. */
export const postgresUrl: Value<string> = z.string().regex(/^postgres(ql)?:\/\/\S*$/, { error: "expected a postgres:// URL, e.g. postgres://cvm@db.example/cvm" });

/** A DNS name for the base domain: lowercased, without a trailing dot. */
export const domainName: Value<string> = z
  .string()
  .transform((v) => v.toLowerCase().replace(/\.$/, ""))
  .refine((v) => v.split(".").every((l) => /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(l)), { error: "not a DNS name" });

/** A `from-to` port range above the privileged ports. */
export const portRange: Value<{ from: number; to: number }> = z.string().transform((v, ctx) => {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(v);
  if (!m || Number(m[1]) < 1024 || Number(m[2]) > 65535 || Number(m[1]) > Number(m[2])) {
    ctx.addIssue({ code: "custom", message: "expected a range such as 22200-22999 above 1023" });
    return z.NEVER;
  }
  return { from: Number(m[1]), to: Number(m[2]) };
});
