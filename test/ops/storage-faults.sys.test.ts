import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Database } from "../../host/store/db.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd, type CvmdProcess } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { fillFilesystem } from "../support/waiting.js";
import { prerequisites } from "../support/prerequisites.js";

const ED = sshKeyPair("ed25519").public;
const why = prerequisites("storage-fault tests (mounting a tmpfs)", { root: true });


// The real cvmd on a real SQLite file, faults made for real: a 16 MiB tmpfs that fills, and the
// write lock held by another connection past cvmd's busy timeout.
describe.skipIf(why !== null)("storage faults answer 503 unavailable with Retry-After, then clear", () => {
  const base = tempDir("cvm-fault-");
  const mnt = join(base.path, "mnt");
  let mounted = false;
  let cvmd: CvmdProcess | undefined;
  afterAll(async () => {
    await cvmd?.kill("SIGKILL");
    if (mounted) execFileSync("umount", ["-l", mnt]);
    base.remove();
  });

  it("a full disk, then a held write lock: every create answers 202 or 503 unavailable (never 500), and 202 once the fault clears", async () => {
    mkdirSync(mnt);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt]);
    mounted = true;
    const dataDir = join(mnt, "data");
    const env = { CVM_DATA_DIR: dataDir, CVM_DRIVER: "none", CVM_RATE_LIMIT: "0" };
    cvmd = await startCvmd(env);
    const { api_key: key } = JSON.parse((await cvmctl(["tenant", "create", "acme", "--json"], env)).stdout) as { api_key: string };
    const create = async () => {
      const res = await fetch(`${cvmd!.url}/v1/instances`, {
        method: "POST",
        headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
        body: JSON.stringify({ public_key: ED }),
      });
      return { status: res.status, retryAfter: res.headers.get("Retry-After"), body: (await res.json()) as { error?: { code: string } } };
    };
    expect((await create()).status).toBe(202);

    // 1. Disk full.
    const filler = join(mnt, "filler");
    fillFilesystem(filler);
    const during: Array<Awaited<ReturnType<typeof create>>> = [];
    for (let i = 0; i < 40; i++) during.push(await create());
    for (const r of during) {
      expect([202, 503]).toContain(r.status);
      if (r.status === 503) {
        expect(r.body.error?.code).toBe("unavailable");
        expect(Number(r.retryAfter)).toBeGreaterThan(0);
      }
    }
    expect(during.filter((r) => r.status === 503).length).toBeGreaterThan(0);
    rmSync(filler);
    expect((await create()).status).toBe(202);

    // 2. The write lock held from another connection for longer than cvmd's 10 s busy timeout.
    const other = await Database.open(join(dataDir, "cvm.sqlite"), { busyTimeoutMs: 1000 });
    await other.exec("BEGIN IMMEDIATE");
    try {
      const locked = await create();
      expect(locked.status).toBe(503);
      expect(locked.body.error?.code).toBe("unavailable");
      expect(locked.retryAfter).toBe("5");
    } finally {
      await other.exec("ROLLBACK");
      await other.close();
    }
    expect((await create()).status).toBe(202);

    // No stack, no error-level line for either fault.
    const errors = cvmd.logs.join("\n").split("\n").filter((l) => /"level":(50|60)/.test(l) || /unhandled error/.test(l));
    expect(errors).toEqual([]);
  }, 120_000);
});
