import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../support/daemon.js";
import { cvmdUntilExit } from "../support/processes.js";
import { prerequisites } from "../support/prerequisites.js";

const readOnlyWhy = prerequisites("the read-only data dir refusal (mounting a tmpfs)", { root: true });

// Exit 78 is what the unit does not restart on (RestartPreventExitStatus=78): each of these needs
// the operator, and the one line on stderr names the setting to look at.
describe("cvmd refuses, exit 78 naming the setting, what only the operator can mend", () => {
  const base = tempDir("cvm-refuse-");
  let mounted: string | null = null;
  afterAll(() => {
    if (mounted) execFileSync("umount", ["-l", mounted]);
    base.remove();
  });

  const expect78 = async (env: Record<string, string>, names: RegExp) => {
    const r = await cvmdUntilExit({ CVM_DRIVER: "none", ...env });
    expect(r.code, r.stderr).toBe(78);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(names);
  };

  it("CVM_LISTEN on an address this host does not have", async () => {
    // 192.0.2.1 (TEST-NET-1) is on no interface here; binding it sends nothing anywhere.
    await expect78({ CVM_DATA_DIR: join(base.path, "a"), CVM_LISTEN: "192.0.2.1:8080" }, /^cvmd: CVM_LISTEN=192\.0\.2\.1:8080: .*EADDRNOTAVAIL/);
  }, 60_000);

  it("missing TLS files", async () => {
    await expect78({ CVM_DATA_DIR: join(base.path, "b"), CVM_TLS_CERT: join(base.path, "none.crt"), CVM_TLS_KEY: join(base.path, "none.key") }, /CVM_TLS_(CERT|KEY)=.*none\.(crt|key).*ENOENT/);
  }, 60_000);

  it.skipIf(readOnlyWhy !== null)("a read-only data dir", async () => {
    const ro = join(base.path, "ro");
    mkdirSync(ro);
    execFileSync("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro]);
    mounted = ro;
    await expect78({ CVM_DATA_DIR: ro }, /^cvmd: CVM_DATA_DIR=.*ro: .*EROFS/);
  }, 60_000);
});
