import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/support/daemon.js";
import { openTestDatabase } from "../../test/support/test-database.js";
import type { Database } from "./db.js";
import { storageTrouble } from "./storage-trouble.js";

describe("PostgreSQL's failures are the store's storage trouble", () => {
  let dir: ReturnType<typeof tempDir>;
  let a: Database;
  let b: Database;
  beforeEach(async () => {
    dir = tempDir();
    a = await openTestDatabase(dir.path);
    await a.migrate();
    b = await openTestDatabase(dir.path);
  });
  afterEach(async () => {
    await a.close();
    await b.close();
    dir.remove();
  });

  it("of two transactions that each read what the other writes, one fails with 40001: busy, and passes when run again", async () => {
    let aRead!: () => void;
    let bRead!: () => void;
    const aHasRead = new Promise<void>((r) => (aRead = r));
    const bHasRead = new Promise<void>((r) => (bRead = r));
    const writer = (db: Database, key: string, readDone: () => void, otherRead: Promise<void>) =>
      db.tx(async () => {
        const n = (await db.get<{ n: number }>("SELECT COUNT(*) AS n FROM settings"))!.n;
        readDone();
        await otherRead;
        await db.run("INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)", [key, String(n), 0]);
      });
    const results = await Promise.allSettled([writer(a, "a", aRead, bHasRead), writer(b, "b", bRead, aHasRead)]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    expect(failed).toHaveLength(1);
    expect(storageTrouble(failed[0]!.reason)).toMatchObject({ code: "40001", retryAfterS: 5 });
    const [loser, winnerKey] = results[0]!.status === "rejected" ? [a, "b"] : [b, "a"];
    await writer(loser, "again", () => undefined, Promise.resolve());
    const rows = await a.all<{ key: string; value: string }>("SELECT key, value FROM settings");
    expect(rows.sort((x, y) => x.key.localeCompare(y.key))).toEqual([
      { key: winnerKey, value: "0" },
      { key: "again", value: "1" },
    ].sort((x, y) => x.key.localeCompare(y.key)));
  });

  it("a connection cut in a transaction is an I/O failure (retry later); the next statement connects again", async () => {
    const failure = await a
      .tx(async () => {
        const { pid } = (await a.get<{ pid: number }>("SELECT pg_backend_pid() AS pid"))!;
        await b.get("SELECT pg_terminate_backend(?)", [pid]);
        await a.run("INSERT INTO settings (key, value, updated_at) VALUES ('k', 'v', 0)");
      })
      .catch((err: unknown) => err);
    expect(storageTrouble(failure)).toMatchObject({ message: "the server's storage failed; retry later", retryAfterS: 30 });
    expect((await a.get<{ one: number }>("SELECT 1 AS one"))?.one).toBe(1);
    await a.tx(() => a.run("INSERT INTO settings (key, value, updated_at) VALUES ('k', 'v', 0)"));
    expect((await b.get<{ value: string }>("SELECT value FROM settings WHERE key = 'k'"))?.value).toBe("v");
  });
});
