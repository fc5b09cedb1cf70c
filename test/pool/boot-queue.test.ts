import { afterEach, describe, expect, it } from "vitest";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { until } from "../support/waiting.js";

/*
 * Cold boots beyond CVM_MAX_CONCURRENT_BOOTS wait in a queue instead of starving each other (issue 21,
 * item 10), against the real daemon, engine and SQLite; the guests are the FakeDriver TEST DOUBLE's,
 * whose boots take `readyAfterMs`. The same with real QEMU guests: test/e2e/neighbours.e2e.test.ts
 * creates three at once on the 2-core CI machine.
 */

const ED = sshKeyPair("ed25519").public;
const create = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: ED }) };
type Event = { type: string; message: string; at: string };


describe("boot queue (FakeDriver test double guests, real daemon and SQLite)", () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.reverse()) await c();
    cleanups.length = 0;
  });

  async function daemon(dir: string, driver: FakeDriver, env: Record<string, string>, slug?: string): Promise<{ d: TestDaemon; key: string }> {
    const d = await startTestDaemon({ dataDir: dir, driver, env });
    cleanups.push(() => d.close());
    return { d, key: slug ? await d.key(slug) : (await d.tenant("acme")).apiKey };
  }
  const events = async (d: TestDaemon, key: string, name: string) => (await d.fetch(`/v1/instances/${name}/events`, { key })).body.data.events as Event[];

  it("three creates at once with one boot at a time: all ready, one after another, each saying how long it waited", async () => {
    const t = tempDir();
    cleanups.push(() => t.remove());
    const driver = new FakeDriver();
    driver.readyAfterMs = 400;
    const { d, key } = await daemon(t.path, driver, { CVM_MAX_CONCURRENT_BOOTS: "1" });
    const names = await Promise.all([0, 1, 2].map(async () => (await d.fetch("/v1/instances", { ...create, key })).body.data.name as string));
    // One boot runs; two wait.
    await until(() => Promise.resolve(driver.guests.size), (n) => n === 1);
    await new Promise((r) => setTimeout(r, 200));
    expect(driver.guests.size).toBe(1);
    // Never two guests booting at once, sampled every 20 ms until all three are ready.
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, [...driver.guests.values()].filter((g) => !g.ready).length)), 20);
    try {
      for (const n of names) await until(() => d.fetch(`/v1/instances/${n}`, { key }), (r) => r.body.data.status === "ready", 10_000);
    } finally {
      clearInterval(sampler);
    }
    expect(most).toBe(1);

    const all = await Promise.all(names.map((n) => events(d, key, n)));
    const queued = all.filter((ev) => ev.some((e) => e.type === "queued"));
    expect(queued.length).toBe(2);
    for (const ev of queued) {
      const types = ev.map((e) => e.type);
      // Waited, then booted: the boot's own phases come after the wait ends.
      expect(types.indexOf("queued")).toBeLessThan(types.indexOf("dequeued"));
      expect(types.indexOf("dequeued")).toBeLessThan(types.indexOf("cold_start"));
      expect(ev.find((e) => e.type === "dequeued")!.message).toMatch(/boot starts after \d+ s in the queue/);
    }
    // Readiness came one boot apart: never two guests booting at once.
  });

  it("a queued create deleted while it waits never boots; one still queued at a restart boots after it", async () => {
    const t = tempDir();
    cleanups.push(() => t.remove());
    const driver = new FakeDriver();
    driver.readyAfterMs = 1500;
    const first = await daemon(t.path, driver, { CVM_MAX_CONCURRENT_BOOTS: "1" });
    const [a, b, c] = await Promise.all([0, 1, 2].map(async () => (await first.d.fetch("/v1/instances", { ...create, key: first.key })).body.data.name as string));
    await until(() => Promise.resolve(driver.guests.size), (n) => n === 1);
    // Whichever two are queued: delete one, keep the other across a restart.
    const waiting: string[] = [];
    for (const n of [a!, b!, c!]) if ((await events(first.d, first.key, n)).some((e) => e.type === "queued")) waiting.push(n);
    expect(waiting.length).toBe(2);
    const del = await first.d.fetch(`/v1/instances/${waiting[0]}`, { method: "DELETE", key: first.key });
    expect(del.body.data.status).toBe("terminated");
    await first.d.close();
    cleanups.pop();

    const second = await daemon(t.path, driver, { CVM_MAX_CONCURRENT_BOOTS: "1" }, "acme");
    const resumed = await until(() => second.d.fetch(`/v1/instances/${waiting[1]}`, { key: second.key }), (r) => r.body.data.status !== "provisioning", 15_000);
    expect(resumed.body.data.status).toBe("ready");
    const deletedId = (await second.d.fetch(`/v1/instances/${waiting[0]}`, { key: second.key })).body.data.id as string | undefined;
    // The deleted one never reached the driver.
    expect([...driver.guests.values()].map((g) => g.spec.name)).not.toContain(waiting[0]);
    expect(deletedId === undefined || !driver.guests.has(deletedId)).toBe(true);
  });
});
