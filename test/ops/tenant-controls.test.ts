import { afterAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../host/clock.js";
import { FakeDriver } from "../support/fake-driver.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { jsonPost, startOpsDaemon, until } from "./helpers.js";

const ED = sshKeyPair("ed25519").public;
const HOUR = 3_600_000;

describe("tenant controls through cvmctl", () => {
  const dirs: Array<{ remove(): void }> = [];
  afterAll(() => dirs.forEach((d) => d.remove()));
  const dir = () => {
    const d = tempDir();
    dirs.push(d);
    return d.path;
  };

  it("a suspended tenant gets 403 forbidden, a resumed one 200 (real cvmd process)", async () => {
    const env = { CVM_DATA_DIR: dir(), CVM_DRIVER: "none" };
    const cvmd = await startCvmd(env);
    try {
      const { api_key: key } = JSON.parse((await cvmctl(["tenant", "create", "acme", "--json"], env)).stdout) as { api_key: string };
      const usage = () => fetch(`${cvmd.url}/v1/usage`, { headers: { Authorization: `Bearer ${key}` } });
      expect((await usage()).status).toBe(200);
      expect((await cvmctl(["tenant", "suspend", "acme"], env)).code).toBe(0);
      const r = await usage();
      expect(r.status).toBe(403);
      expect(((await r.json()) as { error: { code: string } }).error.code).toBe("forbidden");
      expect((await cvmctl(["tenant", "resume", "acme"], env)).code).toBe(0);
      expect((await usage()).status).toBe(200);
      expect((await cvmctl(["tenant", "suspend", "nobody"], env)).code).toBe(1);
    } finally {
      await cvmd.kill();
    }
  });

  it("key rotate: the new key works at once, the old one until the grace period ends (injected clock)", async () => {
    const clock = new ManualClock(new Date());
    const dataDir = dir();
    const env = { CVM_DATA_DIR: dataDir };
    const d = await startOpsDaemon({ dataDir, driver: new FakeDriver(), clock });
    try {
      const old = await d.tenant("acme");
      const prefix = old.split("_")[1]!;
      const rot = await cvmctl(["key", "rotate", prefix, "--grace", "1h", "--json"], env);
      expect(rot.stderr).toBe("");
      expect(rot.code).toBe(0);
      const out = JSON.parse(rot.stdout) as { api_key: string; old_prefix: string; old_key_valid_until: string };
      expect(out.api_key).toMatch(/^ca_[a-z0-9]{8}_[a-z0-9]{18}$/);
      expect(out.old_prefix).toBe(prefix);
      // cvmctl uses the real clock; the daemon's clock started at the same moment.
      const until = Date.parse(out.old_key_valid_until);
      expect(Math.abs(until - (Date.now() + HOUR))).toBeLessThan(60_000);

      expect((await d.fetch("/v1/usage", { key: out.api_key })).status).toBe(200);
      expect((await d.fetch("/v1/usage", { key: old })).status).toBe(200);
      clock.set(new Date(until - 1000));
      expect((await d.fetch("/v1/usage", { key: old })).status).toBe(200);
      clock.set(new Date(until + 1000));
      expect((await d.fetch("/v1/usage", { key: old })).status).toBe(401);
      expect((await d.fetch("/v1/usage", { key: out.api_key })).status).toBe(200);

      // The old key cannot be rotated again once it is dead to cvmctl's clock; unknown prefixes fail too.
      expect((await cvmctl(["key", "rotate", "zzzzzzzz"], env)).code).toBe(1);
      expect((await cvmctl(["key", "rotate", prefix, "--grace", "soon"], env)).code).toBe(2);
      const immediate = await cvmctl(["key", "rotate", out.api_key.split("_")[1]!, "--grace", "0s"], env);
      expect(immediate.code).toBe(0);
      expect((await d.fetch("/v1/usage", { key: out.api_key })).status).toBe(401);
      const list = await cvmctl(["key", "list", "acme", "--json"], env);
      expect((JSON.parse(list.stdout) as unknown[]).length).toBe(3);
    } finally {
      await d.close();
    }
  });

  it("instance delete --tenant goes through cvmd's engine, like DELETE /v1/instances/NAME", async () => {
    const dataDir = dir();
    const env = { CVM_DATA_DIR: dataDir };
    const driver = new FakeDriver();
    const d = await startOpsDaemon({ dataDir, driver });
    try {
      const key = await d.tenant("acme");
      await d.tenant("globex");
      const name = (await d.fetch("/v1/instances", { key, ...jsonPost({ public_key: ED }) })).body.data.name as string;
      await until(() => d.fetch(`/v1/instances/${name}`, { key }), (r) => r.body.data.status === "ready");
      // Tenant scoping: the name does not exist under another tenant.
      expect((await cvmctl(["instance", "delete", "--tenant", "globex", name], env)).code).toBe(1);

      const del = await cvmctl(["instance", "delete", "--tenant", "acme", name, "--json"], env);
      expect(del.stderr).toBe("");
      expect(JSON.parse(del.stdout)).toEqual([{ tenant: "acme", name, status: "terminated" }]);
      const rec = (await d.fetch(`/v1/instances/${name}`, { key })).body.data;
      expect(rec).toMatchObject({ status: "terminated", terminated_reason: "deleted_via_api" });
      expect(driver.destroyed).toHaveLength(1);
      expect((await cvmctl(["instance", "delete", name], env)).code).toBe(2);
    } finally {
      await d.close();
    }
  });

  it("instance cleanup --failed --older-than deletes only failures older than D", async () => {
    const clock = new ManualClock(new Date("2026-03-01T00:00:00Z"));
    const dataDir = dir();
    const env = { CVM_DATA_DIR: dataDir };
    const driver = new FakeDriver();
    const d = await startOpsDaemon({ dataDir, driver, clock });
    try {
      const key = await d.tenant("acme");
      const create = async () => (await d.fetch("/v1/instances", { key, ...jsonPost({ public_key: ED }) })).body.data.name as string;
      const status = async (n: string) => (await d.fetch(`/v1/instances/${n}`, { key })).body.data.status as string;
      const healthy = await create();
      await until(() => status(healthy), (s) => s === "ready");
      driver.failWith = "boot_timeout";
      const oldFailed = [await create(), await create()];
      for (const n of oldFailed) await until(() => status(n), (s) => s === "failed");
      clock.advance(3 * HOUR);
      const youngFailed = await create();
      await until(() => status(youngFailed), (s) => s === "failed");
      clock.advance(30 * 60_000);

      expect((await cvmctl(["instance", "cleanup", "--older-than", "1h"], env)).code).toBe(2);
      const out = await cvmctl(["instance", "cleanup", "--failed", "--older-than", "1h", "--json"], env);
      expect(out.stderr).toBe("");
      const cleaned = JSON.parse(out.stdout) as Array<{ name: string; status: string }>;
      expect(cleaned.map((c) => c.name).sort()).toEqual([...oldFailed].sort());
      for (const c of cleaned) expect(c.status).toBe("terminated");
      for (const n of oldFailed) expect(await status(n)).toBe("terminated");
      expect(await status(youngFailed)).toBe("failed");
      expect(await status(healthy)).toBe("ready");
      // Without --older-than every failed instance goes.
      const all = await cvmctl(["instance", "cleanup", "--failed"], env);
      expect(all.stdout).toContain(`acme/${youngFailed}: terminated`);
      expect(all.stdout).toContain("1 failed instance(s) deleted");
      expect(await status(healthy)).toBe("ready");
    } finally {
      await d.close();
    }
  });

  it("with cvmd stopped, cvmctl records the delete and the next start finishes it", async () => {
    const dataDir = dir();
    const env = { CVM_DATA_DIR: dataDir };
    const driver = new FakeDriver();
    let d = await startOpsDaemon({ dataDir, driver });
    const key = await d.tenant("acme");
    const name = (await d.fetch("/v1/instances", { key, ...jsonPost({ public_key: ED }) })).body.data.name as string;
    await until(() => d.fetch(`/v1/instances/${name}`, { key }), (r) => r.body.data.status === "ready");
    await d.close();

    const del = await cvmctl(["instance", "delete", "--tenant", "acme", name], env);
    expect(del.code).toBe(0);
    expect(del.stdout).toContain(`acme/${name}: terminating`);
    expect(del.stdout).toContain("cvmd is not running");
    expect(driver.guests.size).toBe(1);

    d = await startOpsDaemon({ dataDir, driver });
    try {
      const r = await until(() => d.fetch(`/v1/instances/${name}`, { key }), (x) => x.body.data.status === "terminated");
      expect(r.body.data).toMatchObject({ status: "terminated", terminated_reason: "deleted_via_api" });
      expect(driver.guests.size).toBe(0);
    } finally {
      await d.close();
    }
  });
});
