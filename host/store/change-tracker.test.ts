import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ApiKeyStore } from "./api-keys.js";
import { openTestDatabase } from "../../test/support/test-database.js";
import type { Database } from "./db.js";
import { InstanceStore } from "./instances.js";
import { TenantStore } from "./tenants.js";

describe("cached reads and their invalidation (the test database: a SQLite file, or PostgreSQL)", () => {
  let dir: string;
  let a: Database;
  let b: Database;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "cvm-cache-"));
    a = await openTestDatabase(dir);
    await a.migrate();
    // A second connection with its own tracker stands for another process (cvmctl).
    b = await openTestDatabase(dir);
  });
  afterEach(async () => {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const seed = async (db: Database) => {
    const tenant = await db.tx(() => new TenantStore(db).insert({ slug: "acme", createdAt: new Date(), subscriptionCostUsd: "0", instanceHoursIncluded: 0, overagePerHourUsd: "0" }));
    await db.tx(() => new ApiKeyStore(db).insert({ prefix: "abcdefgh", tenantId: tenant.id, secretHash: Buffer.alloc(32), createdAt: new Date() }));
    return tenant;
  };

  it("a key revoked or a tenant suspended through another connection is seen by the next cached read", async () => {
    await seed(a);
    const keys = new ApiKeyStore(a);
    const first = await keys.withTenantCached("abcdefgh");
    expect(first?.key.revoked_at).toBeNull();
    // Served from memory: the same frozen object.
    expect(await keys.withTenantCached("abcdefgh")).toBe(first);
    expect(Object.isFrozen(first!.tenant)).toBe(true);

    await b.tx(() => new TenantStore(b).setSuspended("acme", new Date()));
    expect((await keys.withTenantCached("abcdefgh"))?.tenant.suspendedAt).not.toBeNull();
    await b.tx(() => new ApiKeyStore(b).revoke("abcdefgh", new Date()));
    expect((await keys.withTenantCached("abcdefgh"))?.key.revoked_at).not.toBeNull();
  });

  it("once told that other writers report to it, a reader trusts the reports instead of the change file", async () => {
    await seed(a);
    const keys = new ApiKeyStore(a);
    a.changes.notifiedByOthers();
    await keys.withTenantCached("abcdefgh");
    await b.tx(() => new ApiKeyStore(b).revoke("abcdefgh", new Date()));
    // Not reported yet (cvmctl reports through cvmd's control socket): still the cached row.
    expect((await keys.withTenantCached("abcdefgh"))?.key.revoked_at).toBeNull();
    expect(b.changes.authWritten).toBe(true);
    a.changes.externalAuthChange();
    expect((await keys.withTenantCached("abcdefgh"))?.key.revoked_at).not.toBeNull();
  });

  it("a write that does not signal stays unseen (the cache is real), which is why every writer signals", async () => {
    await seed(a);
    const keys = new ApiKeyStore(a);
    await keys.withTenantCached("abcdefgh");
    await b.run(`UPDATE api_keys SET revoked_at = 1 WHERE prefix = 'abcdefgh'`);
    expect((await keys.withTenantCached("abcdefgh"))?.key.revoked_at).toBeNull();
    expect((await keys.withTenant("abcdefgh"))?.key.revoked_at).toBe(1);
  });

  it("a read that raced with a write is not served after the write, and a rolled-back write is not served at all", async () => {
    const tenant = await seed(a);
    const instances = new InstanceStore(a);
    const n = { id: "i1", tenantId: tenant.id, name: "alpha123", agent: "openclaw", publicKey: "k", inferenceMode: "m", inferenceModel: "x", egressLimitBytes: 1, createdAt: new Date() };
    await a.tx(() => instances.insert(n));

    // The read runs inside a transaction on the same connection, so it sees the uncommitted
    // status; the transaction then rolls back.
    let seen: string | undefined;
    await a
      .tx(async () => {
        await instances.transition("i1", "provisioning", "failed", { failed_at: Date.now() }, new Date(), "test");
        seen = (await instances.byNameCached(tenant.id, "alpha123"))?.status;
        throw new Error("roll back");
      })
      .catch(() => undefined);
    expect(seen).toBe("failed");
    expect((await instances.byNameCached(tenant.id, "alpha123"))?.status).toBe("provisioning");

    // A read issued before a write commits, completing after it: the next read is fresh.
    const racing = instances.byNameCached(tenant.id, "alpha123");
    const write = a.tx(() => instances.transition("i1", "provisioning", "ready", { ready_at: Date.now() }, new Date(), "test"));
    await Promise.all([racing, write]);
    expect((await instances.byNameCached(tenant.id, "alpha123"))?.status).toBe("ready");
  });
});
