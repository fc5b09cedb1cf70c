import { copyFileSync, existsSync, readdirSync, renameSync, statSync, truncateSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../support/daemon.js";
import { cvmctl, cvmdUntilExit, startCvmd } from "../support/processes.js";

const tenants = async (env: Record<string, string>) => (JSON.parse((await cvmctl(["tenant", "list", "--json"], env)).stdout) as Array<{ slug: string }>).map((t) => t.slug);

// What the data dir looks like after a `cvmctl restore` killed at each step is laid out here file by
// file, in the order restoreDatabase does its renames, rather than by killing cvmctl at a guessed
// moment: every intermediate state is covered, each deterministically.
describe("a missing or empty database beside other state", () => {
  const dir = tempDir();
  const out = tempDir("cvm-backup-");
  const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none" };
  const db = join(dir.path, "cvm.sqlite");
  const backup = join(out.path, "b.sqlite");
  afterAll(() => {
    dir.remove();
    out.remove();
  });

  const expectRefusal = async (what: RegExp) => {
    const r = await cvmdUntilExit(env);
    expect(r.code).toBe(78);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/refusing to initialise a new database/);
    expect(lines[0]).toMatch(what);
  };

  it("a fresh data dir initialises; a killed cvmd leaves its WAL; a 0-byte or missing database is refused, not re-created", async () => {
    const cvmd = await startCvmd(env);
    expect((await cvmctl(["tenant", "create", "acme"], env)).code).toBe(0);
    expect((await cvmctl(["backup", backup], env)).code).toBe(0);
    expect((await cvmctl(["tenant", "create", "later"], env)).code).toBe(0);
    await cvmd.kill("SIGKILL");
    expect(statSync(`${db}-wal`).size).toBeGreaterThan(0);

    copyFileSync(db, join(out.path, "live"));
    truncateSync(db, 0);
    await expectRefusal(/cvm\.sqlite is empty \(0 bytes\).*cvm\.sqlite-wal.*cvmctl restore BACKUP/);
    expect(statSync(db).size).toBe(0);
    // cvmctl opens the database the same way and refuses too.
    const ctl = await cvmctl(["tenant", "list"], env);
    expect(ctl.code).not.toBe(0);
    expect(ctl.stderr).toMatch(/refusing to initialise/);
    expect(statSync(db).size).toBe(0);

    unlinkSync(db);
    await expectRefusal(/cvm\.sqlite is missing/);
    expect(existsSync(db)).toBe(false);
    copyFileSync(join(out.path, "live"), db);
    expect(await tenants(env)).toEqual(["acme", "later"]);
  }, 120_000);

  it("restore killed at each step: cvmd starts from the old or the new database, or refuses, and `cvmctl restore` run again finishes", async () => {
    const stamp = "2026-01-01T00-00-00-000Z";
    const aside = `${db}.before-restore-${stamp}`;
    const incoming = join(dir.path, ".cvm.sqlite.restoring");

    // 1. Killed while copying the backup in: the live database is untouched.
    copyFileSync(backup, incoming);
    truncateSync(incoming, 4096);
    expect(await tenants(env)).toEqual(["acme", "later"]);
    const started = await startCvmd(env);
    // Written while cvmd holds the database open and then killed: the row stays in the WAL only.
    expect((await cvmctl(["tenant", "create", "walonly"], env)).code).toBe(0);
    await started.kill("SIGKILL");
    expect(statSync(`${db}-wal`).size).toBeGreaterThan(0);
    copyFileSync(backup, incoming);

    // 2. Killed after the database was moved aside, before its WAL followed it.
    renameSync(db, aside);
    await expectRefusal(/cvm\.sqlite is missing.*a restore was interrupted/);

    // 3. Killed after the WAL moved too, before the backup was renamed into place.
    renameSync(`${db}-wal`, `${aside}-wal`);
    if (existsSync(`${db}-shm`)) renameSync(`${db}-shm`, `${aside}-shm`);
    await expectRefusal(/a restore was interrupted/);

    // Back to state 2, the dangerous one: the old WAL must not be replayed into the restored file.
    renameSync(`${aside}-wal`, `${db}-wal`);
    // Run again, the restore completes from either state and cvmd serves the backup.
    const again = await cvmctl(["restore", backup], env);
    expect(again.stderr).toBe("");
    expect(again.code).toBe(0);
    expect(readdirSync(dir.path).filter((f) => f === ".cvm.sqlite.restoring")).toEqual([]);
    expect(await tenants(env)).toEqual(["acme"]);
    expect(readdirSync(dir.path).filter((f) => f.endsWith("-wal") && f.includes("before-restore")).length).toBeGreaterThan(0);
    const cvmd = await startCvmd(env);
    await cvmd.kill("SIGTERM");
  }, 120_000);
});
