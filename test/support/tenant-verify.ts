import { existsSync, readFileSync } from "node:fs";
import { expect } from "vitest";
import { cvmVerify } from "./processes.js";

/**
 * The tenant-side check where the instance has no TDX (a TCG guest, or a driver without quotes):
 * `cvm-verify --api` run as its own process through cvmd's real API exits 2 saying "no TDX" with the
 * instance's reason, prints nothing on stdout, and leaves `knownHosts` byte for byte as it was (or
 * absent). Returns the reason line.
 */
export async function expectTenantVerifyNoTdx(o: { api: string; apiKey: string; name: string; manifest: string; sshKey: string; collateral: string; knownHosts: string }): Promise<string> {
  const before = existsSync(o.knownHosts) ? readFileSync(o.knownHosts) : null;
  const args = ["--api", o.api, "--instance", o.name, "--manifest", o.manifest, "--ssh-key", o.sshKey, "--collateral", o.collateral, "--known-hosts", o.knownHosts];
  const r = await cvmVerify(args, { CA_API_KEY: o.apiKey });
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe("");
  expect(r.stderr).toMatch(new RegExp(`^cvm-verify: no TDX: instance ${o.name} cannot attest \\(.+\\); nothing written\\n$`));
  expect(existsSync(o.knownHosts) ? readFileSync(o.knownHosts) : null).toEqual(before);
  return r.stderr.trim();
}
