import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Database } from "../../host/store/db.js";
import { InstanceStore } from "../../host/store/instances.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, tsEntry } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";

const ED = sshKeyPair("ed25519").public;
const N = 2000;

// Real pipes through a real shell: the bug only shows when the reader is a pipe that fills (64 KiB
// buffers) while cvmctl is about to exit.
describe("cvmctl output through a pipe (2,000 instances)", () => {
  const dir = tempDir();
  const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none" };
  const cmd = [process.execPath, ...tsEntry("host/cli/main.ts"), "instances", "--json"].map((a) => `'${a}'`).join(" ");
  let full = "";

  beforeAll(async () => {
    expect((await cvmctl(["tenant", "create", "big"], env)).code).toBe(0);
    const db = await Database.open(join(dir.path, "cvm.sqlite"));
    try {
      const store = new InstanceStore(db);
      const t = (await db.get<{ id: number }>("SELECT id FROM tenants WHERE slug = 'big'"))!;
      await db.tx(async () => {
        for (let i = 0; i < N; i++) {
          await store.insert({ id: `inst-${i}`, tenantId: t.id, name: `box-${String(i).padStart(5, "0")}`, agent: "openclaw", publicKey: ED, inferenceMode: "default_gateway", inferenceModel: "m", egressLimitBytes: 1, createdAt: new Date(1_700_000_000_000 + i) });
        }
      });
    } finally {
      await db.close();
    }
    // Into a file: the reference every pipe must match.
    execFileSync("bash", ["-c", `${cmd} > '${dir.path}/out.json'`], { env: { PATH: process.env.PATH, ...env } });
    full = readFileSync(join(dir.path, "out.json"), "utf8");
    expect((JSON.parse(full) as unknown[]).length).toBe(N);
    expect(full.length).toBeGreaterThan(128 * 1024);
  }, 120_000);
  afterAll(() => dir.remove());

  const sh = (script: string) => spawnSync("bash", ["-c", `set -o pipefail; ${script}`], { env: { PATH: process.env.PATH, ...env }, encoding: "utf8", timeout: 60_000 });

  it("| wc -c counts every byte and cvmctl exits 0", () => {
    const r = sh(`${cmd} | wc -c`);
    expect(r.status).toBe(0);
    expect(Number(r.stdout.trim())).toBe(Buffer.byteLength(full));
  }, 60_000);

  it("| head -c <all> gets every byte; through a slow reader too", () => {
    const r = sh(`${cmd} | head -c ${Buffer.byteLength(full)}`);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(full);
    const slow = sh(`${cmd} | (sleep 1; cat)`);
    expect(slow.status).toBe(0);
    expect(slow.stdout).toBe(full);
  }, 60_000);

  it("| head -c 100 ending early is quiet: no stack, no error line", () => {
    const r = sh(`${cmd} 2>'${dir.path}/err' | head -c 100`);
    expect(r.stdout).toBe(full.slice(0, 100));
    expect(readFileSync(join(dir.path, "err"), "utf8")).toBe("");
    expect(r.status).toBe(0);
  }, 60_000);
});
