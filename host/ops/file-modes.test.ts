import { chmodSync, lstatSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, afterEach, beforeAll, expect, test } from "vitest";

import { DB_FILE } from "../daemon.js";
import { Database } from "../store/db.js";
import { backupDatabase } from "./backup.js";
import { acquireDataDirLock } from "./daemon-lock.js";
import { startTestDaemon } from "../../test/support/daemon.js";
import { FakeDriver } from "../../test/support/fake-driver.js";

// The most permissive umask there is: whatever comes out private here is private by its own mode, not by luck.
let saved = 0;
beforeAll(() => {
  saved = process.umask(0);
});
afterAll(() => {
  process.umask(saved);
});

const dirs: string[] = [];
const temp = () => {
  const d = mkdtempSync(join(tmpdir(), "cvm-modes-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const mode = (p: string) => lstatSync(p).mode & 0o777;

/** Every entry under `dir` with its mode, for a readable failure. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      out[rel + e.name + (e.isDirectory() ? "/" : "")] = mode(p).toString(8);
      if (e.isDirectory()) walk(p, `${rel}${e.name}/`);
    }
  };
  walk(dir, "");
  return out;
}

test("a new database and its WAL and shared-memory files are 0600 from creation", async () => {
  const d = temp();
  const path = join(d, "cvm.sqlite");
  const db = await Database.open(path);
  try {
    await db.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);
    expect({ db: mode(path), wal: mode(`${path}-wal`), shm: mode(`${path}-shm`) }).toEqual({ db: 0o600, wal: 0o600, shm: 0o600 });
  } finally {
    await db.close();
  }
});

test("a database left world-readable (older cvmd, restored copy) is narrowed when opened for writing", async () => {
  const d = temp();
  const path = join(d, "cvm.sqlite");
  const db = await Database.open(path);
  await db.exec("CREATE TABLE t (x)");
  await db.close();
  chmodSync(path, 0o644);
  const again = await Database.open(path);
  await again.close();
  expect(mode(path)).toBe(0o600);
});

test("the data dir lock and a backup are 0600", async () => {
  const d = temp();
  const lock = acquireDataDirLock(d, "test");
  try {
    const files = readdirSync(d);
    expect(files).toHaveLength(1);
    expect(mode(join(d, files[0]!))).toBe(0o600);
  } finally {
    lock.release();
  }
  const db = await Database.open(join(d, "live.sqlite"));
  try {
    await db.migrate();
    await backupDatabase(db, join(d, "backup.sqlite"));
  } finally {
    await db.close();
  }
  expect(mode(join(d, "backup.sqlite"))).toBe(0o600);
});

test("every file cvmd creates in its data dir is 0600 and every directory 0700, the control socket included", async () => {
  const dataDir = join(temp(), "data");
  const daemon = await startTestDaemon({ dataDir, driver: new FakeDriver() });
  try {
    const { apiKey } = await daemon.tenant("modes");
    expect((await daemon.fetch("/v1/instances", { key: apiKey })).status).toBe(200);
    expect(lstatSync(join(dataDir, "cvmd.sock")).isSocket()).toBe(true);
    expect(readdirSync(dataDir)).toContain(DB_FILE);
    const entries = tree(dataDir);
    const loose = Object.entries(entries).filter(([name, m]) => m !== (name.endsWith("/") ? "700" : "600"));
    expect(loose, JSON.stringify(entries)).toEqual([]);
    expect(mode(dataDir)).toBe(0o700);
  } finally {
    await daemon.close();
  }
  // The umask cvmd narrowed around bind() is back to what it was.
  const now = process.umask(0);
  expect(now).toBe(0);
});
