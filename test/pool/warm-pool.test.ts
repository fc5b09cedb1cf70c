import { afterEach, describe, expect, it } from "vitest";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { cvmctl } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { until } from "../support/waiting.js";

/*
 * The warm pool's bookkeeping (claim, refill, capacity, resize, drain, adoption) against the real
 * daemon, SQLite and control socket. The guests are the FakeDriver TEST DOUBLE's; the same pool
 * with real QEMU guests is test/e2e/warm-pool.e2e.test.ts.
 */

const ED = sshKeyPair("ed25519").public;
const create = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: ED }) };


describe("warm pool (FakeDriver test double guests, real daemon and SQLite)", () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  async function daemon(env: Record<string, string>, driver = new FakeDriver(), dataDir?: string): Promise<{ d: TestDaemon; driver: FakeDriver; dir: string; key: string }> {
    let dir = dataDir;
    if (!dir) {
      const t = tempDir();
      cleanups.push(() => t.remove());
      dir = t.path;
    }
    const d = await startTestDaemon({ dataDir: dir, driver, env });
    cleanups.push(() => d.close());
    const key = dataDir ? await d.key("acme") : (await d.tenant("acme")).apiKey;
    return { d, driver, dir, key };
  }

  const warmCount = async (d: TestDaemon) => (await d.pool!.status()).images.find((i) => i.current)?.warm ?? 0;

  async function createReady(d: TestDaemon, key: string) {
    const res = await d.fetch("/v1/instances", { ...create, key });
    expect(res.status).toBe(202);
    const name = res.body.data.name as string;
    const inst = await until(() => d.fetch(`/v1/instances/${name}`, { key }), (r) => r.body.data.status !== "provisioning");
    const events = (await d.fetch(`/v1/instances/${name}/events`, { key })).body.data.events as Array<{ type: string; message: string }>;
    return { name, inst: inst.body.data, events };
  }

  it("claims a warm guest, never reuses it, and refills", async () => {
    const { d, driver, key } = await daemon({ CVM_WARM_POOL_SIZE: "2" });
    await until(() => warmCount(d), (n) => n === 2);
    const warmBefore = [...driver.poolGuests.keys()];

    const a = await createReady(d, key);
    expect(a.inst.status).toBe("ready");
    const claim = a.events.find((e) => e.type === "claim");
    expect(claim?.message).toMatch(/^claimed warm guest pool-[0-9a-f]{10} /);
    expect(a.events.some((e) => e.type === "cold_start")).toBe(false);
    expect(driver.claims).toHaveLength(1);
    expect(warmBefore).toContain(driver.claims[0]!.guestId);

    // Refilled with a new guest; the claimed one is not in the pool any more.
    await until(() => warmCount(d), (n) => n === 2);
    expect([...driver.poolGuests.keys()]).not.toContain(driver.claims[0]!.guestId);

    const b = await createReady(d, key);
    expect(b.inst.status).toBe("ready");
    expect(driver.claims).toHaveLength(2);
    expect(driver.claims[1]!.guestId).not.toBe(driver.claims[0]!.guestId);

    // Deleting a claimed instance tears down its guest through the instance, not the pool.
    const del = await d.fetch(`/v1/instances/${a.name}`, { method: "DELETE", key });
    expect(del.status).toBe(202);
    await until(() => d.fetch(`/v1/instances/${a.name}`, { key }), (r) => r.body.data.status === "terminated");
    const status = await d.pool!.status();
    expect(status.images[0]).toMatchObject({ claimed: 2, warm: 2 });
  });

  it("boots pool guests under the instance egress cap (CVM_EGRESS_LIMIT_BYTES), the one their claim keeps", async () => {
    const { d, driver, key } = await daemon({ CVM_WARM_POOL_SIZE: "1", CVM_EGRESS_LIMIT_BYTES: "123456789" });
    await until(() => warmCount(d), (n) => n === 1);
    expect([...driver.poolGuests.values()].map((g) => g.egressLimitBytes)).toEqual([123456789]);
    const a = await createReady(d, key);
    expect(a.inst.egress_limit_bytes).toBe(123456789);
  });

  it("cold-starts with an empty pool and says so in the events", async () => {
    const { d, driver, key } = await daemon({ CVM_WARM_POOL_SIZE: "0" });
    const a = await createReady(d, key);
    expect(a.inst.status).toBe("ready");
    expect(a.events.find((e) => e.type === "cold_start")?.message).toBe("no warm guest available: cold start");
    expect(a.events.some((e) => e.type === "claim")).toBe(false);
    expect(driver.claims).toHaveLength(0);
  });

  it("bounds pool plus instances by the capacity budget; a create that does not fit fails with capacity_exhausted", async () => {
    // 2 vCPU guests (the default size) in a 4-vCPU budget: two guests fit.
    const { d, driver, key } = await daemon({ CVM_WARM_POOL_SIZE: "2", CVM_CAPACITY_VCPUS: "4" });
    await until(() => warmCount(d), (n) => n === 2);
    expect((await createReady(d, key)).inst.status).toBe("ready");
    // One instance + one warm guest = the budget: the pool cannot refill to 2.
    await d.pool!.refillNow();
    let s = await d.pool!.status();
    expect(s.images[0]).toMatchObject({ warm: 1, booting: 0 });
    expect(s.refill_blocked).toMatch(/^capacity: 2 guest\(s\) fit/);
    expect(s.capacity).toMatchObject({ max_guests: 2, instances: 1, pool_guests: 1 });

    expect((await createReady(d, key)).inst.status).toBe("ready");
    const c = await createReady(d, key);
    expect(c.inst.status).toBe("failed");
    expect(c.inst.failure_code).toBe("capacity_exhausted");
    expect(c.inst.failure_message).toBe("The host has no memory or CPU left for another instance.");
    expect(driver.claims).toHaveLength(2);
    expect(driver.guests.size).toBe(2);

    // Freeing an instance frees its slot for the pool.
    const first = (await d.fetch("/v1/instances", { key })).body.data.instances.find((i: { status: string }) => i.status === "ready");
    await d.fetch(`/v1/instances/${first.name}`, { method: "DELETE", key });
    await until(() => d.fetch(`/v1/instances/${first.name}`, { key }), (r) => r.body.data.status === "terminated");
    await d.pool!.refillNow();
    await until(() => warmCount(d), (n) => n === 1);
    s = await d.pool!.status();
    expect(s.capacity).toMatchObject({ instances: 1, pool_guests: 1 });
  });

  it("a budget below one guest fails every create with capacity_exhausted", async () => {
    const { d, driver, key } = await daemon({ CVM_CAPACITY_MEMORY_MIB: "1024" });
    const a = await createReady(d, key);
    expect(a.inst).toMatchObject({ status: "failed", failure_code: "capacity_exhausted" });
    expect(driver.guests.size).toBe(0);
  });

  it("cvmctl pool shows the pool and resizes it live; shrinking drains", async () => {
    const { d, driver, dir } = await daemon({ CVM_WARM_POOL_SIZE: "1" });
    const env = { CVM_DATA_DIR: dir };
    await until(() => warmCount(d), (n) => n === 1);
    const shown = await cvmctl(["pool", "--json"], env);
    expect(shown.code).toBe(0);
    const s = JSON.parse(shown.stdout);
    expect(s.current_image).toBe("img-fake-1");
    expect(s.images).toEqual([{ image_id: "img-fake-1", current: true, size: 1, size_source: "default", warm: 1, booting: 0, claimed: 0, failed: 0 }]);
    const table = await cvmctl(["pool"], env);
    expect(table.stdout).toMatch(/\* img-fake-1\s+1 \(default\)\s+1\s+0\s+0\s+0/);

    const up = await cvmctl(["pool", "resize", "3"], env);
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(/resized to 3/);
    await until(() => warmCount(d), (n) => n === 3);
    const down = await cvmctl(["pool", "resize", "1"], env);
    expect(down.code).toBe(0);
    await until(() => warmCount(d), (n) => n === 1);
    expect(driver.destroyedPoolGuests).toHaveLength(2);
    expect((await d.pool!.status()).images[0]).toMatchObject({ size: 1, size_source: "operator" });

    const bad = await cvmctl(["pool", "resize", "65"], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/from 0 to 64/);
    expect((await cvmctl(["pool", "resize", "x"], env)).code).toBe(2);
  });

  it("drains guests of a replaced image and boots the new one's", async () => {
    const { d, driver } = await daemon({ CVM_WARM_POOL_SIZE: "2" });
    await until(() => warmCount(d), (n) => n === 2);
    const old = [...driver.poolGuests.keys()];
    driver.imageId = "img-fake-2";
    await d.pool!.refillNow();
    await until(() => warmCount(d), (n) => n === 2);
    expect(driver.destroyedPoolGuests.sort()).toEqual(old.sort());
    expect([...driver.poolGuests.values()].map((g) => g.imageId)).toEqual(["img-fake-2", "img-fake-2"]);
    const s = await d.pool!.status();
    expect(s.images.map((i) => [i.image_id, i.current, i.warm])).toEqual([
      ["img-fake-1", false, 0],
      ["img-fake-2", true, 2],
    ]);

    // No image at all: everything drains.
    driver.imageId = null;
    await d.pool!.refillNow();
    expect(driver.poolGuests.size).toBe(0);
    expect((await d.pool!.status()).refill_blocked).toBe("no current image");
  });

  it("replaces a pool guest that dies, and adopts live ones after a restart instead of booting more", async () => {
    const driver = new FakeDriver();
    const first = await daemon({ CVM_WARM_POOL_SIZE: "2" }, driver);
    await until(() => warmCount(first.d), (n) => n === 2);
    const [dead] = [...driver.poolGuests.keys()];
    driver.crashPoolGuest(dead!);
    await until(
      () => first.d.pool!.status(),
      (s) => s.images[0]!.failed === 1 && s.images[0]!.warm === 2,
    );
    expect(driver.poolGuests.has(dead!)).toBe(false);

    const survivors = [...driver.poolGuests.keys()].sort();
    await first.d.close();
    const second = await daemon({ CVM_WARM_POOL_SIZE: "2" }, driver, first.dir);
    await second.d.pool!.refillNow();
    await until(() => warmCount(second.d), (n) => n === 2);
    expect([...driver.poolGuests.keys()].sort()).toEqual(survivors);
    // And what it adopted is claimable.
    const a = await createReady(second.d, second.key);
    expect(a.inst.status).toBe("ready");
    expect(survivors).toContain(driver.claims[0]!.guestId);
  });
});
