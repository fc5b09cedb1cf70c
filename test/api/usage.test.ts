import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../host/clock.js";
import { addMonthsUtc, billingWindow, instanceHours } from "../../host/usage/billing.js";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";

const T = (s: string) => new Date(s);

describe("billing window arithmetic", () => {
  it("anchors months to the signup and clamps short months without drifting", () => {
    const signup = T("2026-01-31T10:00:00Z");
    expect(addMonthsUtc(signup, 1).toISOString()).toBe("2026-02-28T10:00:00.000Z");
    expect(addMonthsUtc(signup, 2).toISOString()).toBe("2026-03-31T10:00:00.000Z");
    expect(addMonthsUtc(signup, 13).toISOString()).toBe("2027-02-28T10:00:00.000Z");
    expect(addMonthsUtc(T("2027-12-31T00:00:00Z"), 2).toISOString()).toBe("2028-02-29T00:00:00.000Z");
  });

  it("finds the window containing now, boundaries included on the left", () => {
    const signup = T("2026-04-15T14:32:11Z");
    const w = billingWindow(signup, T("2026-05-15T14:32:11Z"));
    expect([w.start.toISOString(), w.end.toISOString()]).toEqual(["2026-05-15T14:32:11.000Z", "2026-06-15T14:32:11.000Z"]);
    const before = billingWindow(signup, T("2026-05-15T14:32:10Z"));
    expect(before.start.toISOString()).toBe("2026-04-15T14:32:11.000Z");
    const years = billingWindow(signup, T("2029-01-01T00:00:00Z"));
    expect(years.start.toISOString()).toBe("2028-12-15T14:32:11.000Z");
  });

  it("counts only the part of each interval inside the window and before now", () => {
    const w = { start: T("2026-03-01T00:00:00Z"), end: T("2026-04-01T00:00:00Z") };
    const now = T("2026-03-02T00:00:00Z");
    const hours = instanceHours(
      [
        { from: T("2026-02-28T22:00:00Z"), to: T("2026-03-01T03:00:00Z") }, // 3 h inside
        { from: T("2026-03-01T12:00:00Z"), to: null }, // running: 12 h until now
        { from: T("2026-02-01T00:00:00Z"), to: T("2026-02-02T00:00:00Z") }, // outside
      ],
      w,
      now,
    );
    expect(hours).toBe(15);
  });
});

describe("GET /v1/usage with an injected clock", () => {
  const dir = tempDir();
  const clock = new ManualClock(T("2026-01-31T10:00:00Z"));
  let d: TestDaemon;
  let key: string;

  beforeAll(async () => {
    d = await startTestDaemon({ dataDir: dir.path, driver: new FakeDriver(), clock });
    key = (await d.tenant("acme")).apiKey;
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  const create = async () => {
    const r = await d.fetch("/v1/instances", { key, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: sshKeyPair("ed25519").public }) });
    const name = r.body.data.name as string;
    for (let i = 0; i < 100; i++) {
      const g = await d.fetch(`/v1/instances/${name}`, { key });
      if (g.body.data.status === "ready") return name;
      await new Promise((res) => setTimeout(res, 10));
    }
    throw new Error("instance never became ready");
  };
  const usage = async () => (await d.fetch("/v1/usage", { key })).body.data;

  it("reports pricing as strings and zero usage at signup", async () => {
    const u = await usage();
    expect(u.pricing).toEqual({
      period_start: "2026-01-31T10:00:00Z",
      period_end: "2026-02-28T10:00:00Z",
      subscription_cost_usd: "200.00",
      instance_hours_included: 200,
      overage_per_hour_usd: "0.45",
    });
    expect(u.usage).toEqual({
      instance_hours_used: 0,
      inference_cost_usd: "0.00",
      egress_bytes: 0,
      egress_limit_bytes: 5368709120,
      egress_observed_at: null,
      egress_blocked: false,
      egress_block_applied_at: null,
    });
  });

  it("splits instance-hours across the window boundary", async () => {
    clock.set(T("2026-02-28T04:00:00Z"));
    const a = await create(); // ready at 04:00, six hours before the boundary
    clock.set(T("2026-02-28T09:00:00Z"));
    expect((await usage()).usage.instance_hours_used).toBe(5);

    clock.set(T("2026-02-28T16:00:00Z"));
    let u = await usage();
    expect(u.pricing.period_start).toBe("2026-02-28T10:00:00Z");
    expect(u.pricing.period_end).toBe("2026-03-31T10:00:00Z");
    expect(u.usage.instance_hours_used).toBe(6);

    await d.fetch(`/v1/instances/${a}`, { key, method: "DELETE" }); // billing stops at the delete
    clock.set(T("2026-03-01T00:00:00Z"));
    await create();
    clock.set(T("2026-03-01T01:30:00Z"));
    u = await usage();
    expect(u.usage.instance_hours_used).toBe(7.5);
  });
});
