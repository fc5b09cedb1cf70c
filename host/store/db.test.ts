import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/support/daemon.js";
import { openTestDatabase, TEST_DATABASE } from "../../test/support/test-database.js";
import type { Database } from "./db.js";
import { InstanceStore } from "./instances.js";
import { MIGRATIONS } from "./migrations.js";
import { storageTrouble } from "./storage-trouble.js";
import { TenantStore } from "./tenants.js";

const tenant = (slug: string) => ({ slug, createdAt: new Date(), subscriptionCostUsd: "0", instanceHoursIncluded: 0, overagePerHourUsd: "0" });

describe(`the database layer (the test database: ${TEST_DATABASE})`, () => {
  let dir: ReturnType<typeof tempDir>;
  const open: Database[] = [];
  const connect = async (opts: { busyTimeoutMs?: number } = {}) => {
    const db = await openTestDatabase(dir.path, opts);
    open.push(db);
    return db;
  };
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((db) => db.close()));
    dir.remove();
  });

  it("two connections migrating one new database at once apply each migration once", async () => {
    const [a, b] = [await connect(), await connect()];
    expect(await Promise.all([a.migrate(), b.migrate()])).toEqual([MIGRATIONS.length, MIGRATIONS.length]);
    expect(await a.schemaVersion()).toBe(MIGRATIONS.length);
    expect(await (await connect()).migrate()).toBe(MIGRATIONS.length);
  });

  it("generated ids, affected-row counts and a broken unique key read the same on both", async () => {
    const db = await connect();
    await db.migrate();
    const tenants = new TenantStore(db);
    const acme = await db.tx(() => tenants.insert(tenant("acme")));
    const other = await db.tx(() => tenants.insert(tenant("other")));
    expect(typeof acme.id).toBe("number");
    expect(other.id).toBeGreaterThan(acme.id);
    expect((await tenants.byId(other.id))?.slug).toBe("other");
    expect(await db.tx(() => tenants.setSuspended("acme", new Date()))).toBe(true);
    expect(await db.tx(() => tenants.setSuspended("nobody", new Date()))).toBe(false);

    const instances = new InstanceStore(db);
    const n = { id: "i1", tenantId: acme.id, name: "alpha", agent: "openclaw", publicKey: "k", inferenceMode: "m", inferenceModel: "x", egressLimitBytes: 5_368_709_120, createdAt: new Date(1_767_225_600_123) };
    expect(await db.tx(() => instances.insert(n))).toBe(true);
    expect(await db.tx(() => instances.insert({ ...n, id: "i2" }))).toBe(false);
    await expect(db.tx(() => instances.insert({ ...n, name: "beta" }))).rejects.toThrow(); // same id: not the name's key
    const got = await instances.byId("i1");
    // Past 2^32: timestamps and byte counts are 64-bit on both.
    expect(got?.createdAt.getTime()).toBe(1_767_225_600_123);
    expect(got?.egressLimitBytes).toBe(5_368_709_120);
    expect(await instances.countByStatus()).toEqual({ provisioning: 1 });
  });

  it("a NUL quoted into an event is recorded, not refused (PostgreSQL's text gets U+FFFD for it)", async () => {
    const db = await connect();
    await db.migrate();
    const t = await db.tx(() => new TenantStore(db).insert(tenant("acme")));
    const instances = new InstanceStore(db);
    await db.tx(() => instances.insert({ id: "i1", tenantId: t.id, name: "alpha", agent: "openclaw", publicKey: "k", inferenceMode: "m", inferenceModel: "x", egressLimitBytes: 1, createdAt: new Date() }));
    await db.tx(() => instances.appendEvent("i1", "ssh", null, null, "banner SSH-2.0-\0evil", new Date()));
    expect((await instances.events("i1")).at(-1)?.message).toBe(TEST_DATABASE === "postgres" ? "banner SSH-2.0-\uFFFDevil" : "banner SSH-2.0-\0evil");
  });

  it("names sort byte by byte, as the list pages them", async () => {
    const db = await connect();
    await db.migrate();
    const t = await db.tx(() => new TenantStore(db).insert(tenant("acme")));
    const instances = new InstanceStore(db);
    const names = ["b-2", "B1", "a10", "a9", "a-1", "_x", "Z"];
    await db.tx(async () => {
      for (const [i, name] of names.entries()) {
        await instances.insert({ id: `i${i}`, tenantId: t.id, name, agent: "openclaw", publicKey: "k", inferenceMode: "m", inferenceModel: "x", egressLimitBytes: 1, createdAt: new Date(1000) });
      }
    });
    const page = await instances.pageForTenant(t.id, new Date(0), null, 100);
    expect(page.instances.map((i) => i.name)).toEqual([...names].sort());
  });

  it("a write that waits past the busy timeout for another connection's transaction is storage trouble `busy`", async () => {
    const holder = await connect();
    await holder.migrate();
    const waiter = await connect({ busyTimeoutMs: 200 });
    await holder.tx(() => new TenantStore(holder).insert(tenant("acme")));
    let trouble: ReturnType<typeof storageTrouble> = null;
    await holder.tx(async () => {
      await holder.run(`UPDATE tenants SET suspended_at = 1 WHERE slug = 'acme'`);
      await waiter.tx(() => new TenantStore(waiter).setSuspended("acme", null)).catch((err: unknown) => (trouble = storageTrouble(err)));
    });
    expect(trouble).toMatchObject({ message: "the database is busy; retry shortly", retryAfterS: 5 });
  });
});
