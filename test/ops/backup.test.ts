import { existsSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Database } from "../../host/store/db.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";

const ED = sshKeyPair("ed25519").public;

async function rows(file: string): Promise<{ integrity: string; names: Set<string>; eventless: number }> {
  const db = await Database.open(file, { readonly: true });
  try {
    const integrity = (await db.get<{ integrity_check: string }>("PRAGMA integrity_check"))!.integrity_check;
    const names = new Set((await db.all<{ name: string }>("SELECT name FROM instances")).map((r) => r.name));
    // Each instance and its creation event are written in one transaction: a torn copy would show one without the other.
    const eventless = (await db.get<{ n: number }>("SELECT COUNT(*) AS n FROM instances i WHERE NOT EXISTS (SELECT 1 FROM instance_events e WHERE e.instance_id = i.id AND e.seq = 1)"))!.n;
    return { integrity, names, eventless };
  } finally {
    await db.close();
  }
}

describe("backup and restore of the real cvmd's database", () => {
  const dir = tempDir();
  const out = tempDir("cvm-backup-");
  // The write load below is the point here, not the limiter.
  const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none", CVM_RATE_LIMIT: "0" };
  afterAll(() => {
    dir.remove();
    out.remove();
  });

  it("a backup taken while 20 clients keep creating holds every instance committed before it; restore refuses while cvmd runs", async () => {
    const cvmd = await startCvmd(env);
    let stopped = false;
    try {
      const { api_key: key } = JSON.parse((await cvmctl(["tenant", "create", "acme", "--json"], env)).stdout) as { api_key: string };
      const acked: Array<{ name: string; at: number }> = [];
      let backupDone = false;
      // 20 concurrent clients, each creating one instance after another until the backup is over (bounded).
      const clients = Array.from({ length: 20 }, async () => {
        for (let i = 0; i < 200 && !backupDone; i++) {
          const res = await fetch(`${cvmd.url}/v1/instances`, {
            method: "POST",
            headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
            body: JSON.stringify({ public_key: ED }),
          });
          expect(res.status).toBe(202);
          acked.push({ name: ((await res.json()) as { data: { name: string } }).data.name, at: Date.now() });
        }
      });
      while (acked.length < 20) await new Promise((r) => setTimeout(r, 2));
      const startedAt = Date.now();
      const ackedBefore = acked.filter((a) => a.at < startedAt).map((a) => a.name);
      const backupFile = join(out.path, "during.sqlite");
      const b = await cvmctl(["backup", backupFile], env);
      const endedAt = Date.now();
      backupDone = true;
      await Promise.all(clients);
      expect(b.stderr).toBe("");
      expect(b.code).toBe(0);
      expect(b.stdout).toMatch(/backup written to .*during\.sqlite: schema \d+, 1 tenants, \d+ instances/);

      const during = await rows(backupFile);
      const ackedAfter = acked.filter((a) => a.at > endedAt).length;
      console.log(
        `backup under load: ${ackedBefore.length} creates acknowledged before cvmctl started, ${during.names.size} in the backup, ${acked.length} created in all (${ackedAfter} acknowledged after it finished)`,
      );
      expect(during.integrity).toBe("ok");
      expect(during.eventless).toBe(0);
      for (const n of ackedBefore) expect(during.names.has(n), n).toBe(true);
      const all = new Set(acked.map((a) => a.name));
      for (const n of during.names) expect(all.has(n), n).toBe(true);
      // The creates really overlapped the backup: some committed after its snapshot, so they are not in it.
      expect(during.names.size).toBeLessThan(all.size);
      // No partial file is left beside it.
      expect(readdirSync(out.path).filter((f) => f.includes("partial"))).toEqual([]);

      const afterFile = join(out.path, "after.sqlite");
      expect((await cvmctl(["backup", afterFile], env)).code).toBe(0);
      const after = await rows(afterFile);
      expect(after.integrity).toBe("ok");
      expect([...after.names].sort()).toEqual([...all].sort());

      // Restore refuses while cvmd runs, and leaves the live database alone.
      const refused = await cvmctl(["restore", backupFile], env);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/refusing to restore while cvmd runs \(cvmd, pid \d+\)/);
      expect((await rows(join(dir.path, "cvm.sqlite"))).names.size).toBe(all.size);

      // Stopped, the restore goes through and the next cvmd serves the backup's state.
      expect(await cvmd.kill("SIGTERM")).toBe(0);
      stopped = true;
      const restored = await cvmctl(["restore", backupFile], env);
      expect(restored.stderr).toBe("");
      expect(restored.code).toBe(0);
      expect(restored.stdout).toMatch(/previous database kept as .*before-restore-/);
      const second = await startCvmd(env);
      try {
        const list = (await (await fetch(`${second.url}/v1/instances?limit=1000`, { headers: { Authorization: `Bearer ${key}` } })).json()) as {
          data: { instances: Array<{ name: string }> };
        };
        expect(new Set(list.data.instances.map((i) => i.name))).toEqual(during.names);
      } finally {
        await second.kill();
      }
    } finally {
      if (!stopped) await cvmd.kill();
    }
  });

  it("restore checks the file, and takes over after a killed cvmd", async () => {
    const junk = join(out.path, "junk.sqlite");
    writeFileSync(junk, "not a database at all, just text that is long enough to have a header ".repeat(20));
    const bad = await cvmctl(["restore", junk], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/junk\.sqlite: /);
    expect((await cvmctl(["restore", join(out.path, "missing.sqlite")], env)).stderr).toMatch(/no such file/);

    const cvmd = await startCvmd(env);
    expect(await cvmd.kill("SIGKILL")).toBeNull();
    // The pid file is stale now: restore may proceed.
    expect(existsSync(join(dir.path, "cvmd.pid"))).toBe(true);
    const r = await cvmctl(["restore", join(out.path, "after.sqlite")], env);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect((await rows(join(dir.path, "cvm.sqlite"))).names).toEqual((await rows(join(out.path, "after.sqlite"))).names);
  });
});
