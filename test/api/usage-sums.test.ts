import { afterAll, describe, expect, it } from "vitest";
import { InstanceStore } from "../../host/store/instances.js";
import { TenantStore } from "../../host/store/tenants.js";
import { instanceHours, instanceHoursFromSums } from "../../host/usage/billing.js";
import { tempDir } from "../support/daemon.js";
import { openTestDatabase } from "../support/test-database.js";

const H = 3600_000;

// The SQL aggregate behind /v1/usage against the per-interval reference, on random intervals that
// start before, inside and after the window, end before, inside, after it or not at all.
describe("usage hours summed by the database", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it("equals the per-interval sum for 400 random instances, at several moments", async () => {
    const db = await openTestDatabase(dir.path);
    await db.migrate();
    const store = new InstanceStore(db);
    const t0 = Date.UTC(2026, 0, 10);
    const tenant = await db.tx(() => new TenantStore(db).insert({ slug: "acme", createdAt: new Date(t0), subscriptionCostUsd: "0", instanceHoursIncluded: 0, overagePerHourUsd: "0" }));
    const other = await db.tx(() => new TenantStore(db).insert({ slug: "other", createdAt: new Date(t0), subscriptionCostUsd: "0", instanceHoursIncluded: 0, overagePerHourUsd: "0" }));
    const window = { start: new Date(t0 + 31 * 24 * H), end: new Date(t0 + 59 * 24 * H) };
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const rows: Array<{ ready: number | null; end: number | null; col: string }> = [];
    await db.tx(async () => {
      for (let i = 0; i < 400; i++) {
        const ready = rnd() < 0.1 ? null : t0 + rnd() * 70 * 24 * H;
        const end = ready === null || rnd() < 0.3 ? null : ready + rnd() * 40 * 24 * H;
        const col = ["terminating_at", "failed_at", "terminated_at"][i % 3]!;
        for (const tid of [tenant.id, other.id]) {
          const id = `${tid}-${i}`;
          await store.insert({ id, tenantId: tid, name: `n${String(i).padStart(7, "0")}`, agent: "a", publicKey: "k", inferenceMode: "m", inferenceModel: "m", egressLimitBytes: 1, createdAt: new Date(t0) });
          await db.run(`UPDATE instances SET ready_at = ?, ${col} = ? WHERE id = ?`, [ready === null ? null : Math.round(ready), end === null ? null : Math.round(end), id]);
        }
        rows.push({ ready: ready === null ? null : Math.round(ready), end: end === null ? null : Math.round(end), col });
      }
    });
    // Moments after every recorded time (the clock does not step back) and inside the window.
    for (const now of [new Date(t0 + 120 * 24 * H), new Date(t0 + 58 * 24 * H + 17)]) {
      const live = rows.filter((r) => r.ready !== null && r.ready <= now.getTime() && (r.end === null || r.end <= now.getTime()));
      const expected = instanceHours(live.map((r) => ({ from: new Date(r.ready!), to: r.end === null ? null : new Date(r.end) })), window, now);
      if (live.length !== rows.filter((r) => r.ready !== null).length) continue;
      expect(expected).toBeGreaterThan(100);
      expect(instanceHoursFromSums(await store.billable(tenant.id, window.start, window.end), window, now)).toBe(expected);
    }
    const nowAll = new Date(t0 + 120 * 24 * H);
    const expectedAll = instanceHours(rows.filter((r) => r.ready !== null).map((r) => ({ from: new Date(r.ready!), to: r.end === null ? null : new Date(r.end) })), window, nowAll);
    expect(expectedAll).toBeGreaterThan(100);
    expect(instanceHoursFromSums(await store.billableCached(tenant.id, window.start, window.end), window, nowAll)).toBe(expectedAll);
    await db.close();
  });
});
