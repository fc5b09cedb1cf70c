import { afterAll, describe, expect, it } from "vitest";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";

const ED = sshKeyPair("ed25519").public;

describe("restart safety", () => {
  const dirs: Array<{ remove(): void }> = [];
  afterAll(() => dirs.forEach((d) => d.remove()));

  it("kill -9 of the real cvmd mid-burst loses no acknowledged instance or idempotency record", async () => {
    const dir = tempDir();
    dirs.push(dir);
    const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none", CVM_LOG_LEVEL: "info" };
    const first = await startCvmd(env);
    // cvmctl writes to the same database while the daemon runs (WAL + busy timeout).
    const created = await cvmctl(["tenant", "create", "acme", "--json"], env);
    expect(created.code).toBe(0);
    const { api_key: key } = JSON.parse(created.stdout) as { slug: string; api_key: string };

    const acked = new Map<string, string>(); // idempotency key → instance name
    let stop = false;
    const burst = (async () => {
      for (let i = 0; i < 400 && !stop; i++) {
        const idem = `k-${i}`;
        try {
          const res = await fetch(`${first.url}/v1/instances`, {
            method: "POST",
            headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", "Idempotency-Key": idem },
            body: JSON.stringify({ public_key: ED }),
          });
          const body = (await res.json()) as { data: { name: string } };
          if (res.status === 202) acked.set(idem, body.data.name);
        } catch {
          break; // the daemon is gone
        }
      }
    })();
    while (acked.size < 15) await new Promise((r) => setTimeout(r, 10));
    expect(await first.kill("SIGKILL")).toBeNull();
    stop = true;
    await burst;

    const second = await startCvmd(env);
    try {
      type List = { data: { instances: Array<{ name: string; status: string; failure_code: string | null }> } };
      // Creates that had not reached the driver when cvmd died are resumed after the restart; this driver fails them at once.
      let list: List;
      for (let tries = 0; ; tries++) {
        list = (await (await fetch(`${second.url}/v1/instances?limit=1000`, { headers: { Authorization: `Bearer ${key}` } })).json()) as List;
        if (!list.data.instances.some((i) => i.status === "provisioning") || tries > 100) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const names = new Set(list.data.instances.map((i) => i.name));
      for (const name of acked.values()) expect(names.has(name), name).toBe(true);
      // Without a driver nothing pretends to be ready.
      for (const i of list.data.instances) {
        expect(i.status).toBe("failed");
        // The last few may have been mid-provisioning when killed: resumed, or failed explicitly by the restart.
        expect(["driver_unavailable", "host_restart_lost"]).toContain(i.failure_code);
      }
      // Every acknowledged idempotency key still replays to the same instance.
      for (const [idem, name] of acked) {
        const res = await fetch(`${second.url}/v1/instances`, {
          method: "POST",
          headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", "Idempotency-Key": idem },
          body: JSON.stringify({ public_key: ED }),
        });
        expect(((await res.json()) as { data: { name: string } }).data.name).toBe(name);
      }
      const ls = await cvmctl(["instances", "--tenant", "acme", "--json"], env);
      expect(JSON.parse(ls.stdout).length).toBe(list.data.instances.length);
    } finally {
      await second.kill("SIGTERM");
    }
  });

  it("SIGTERM drains and exits 0; a restarted daemon adopts a still-provisioning guest and finishes it", async () => {
    const dir = tempDir();
    dirs.push(dir);
    const driver = new FakeDriver();
    driver.readyAfterMs = 60_000;
    const a = await startTestDaemon({ dataDir: dir.path, driver });
    const key = (await a.tenant("acme")).apiKey;
    const r = await a.fetch("/v1/instances", { key, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: ED }) });
    const name = r.body.data.name;
    await a.close();

    driver.readyAfterMs = 50;
    const b = await startTestDaemon({ dataDir: dir.path, driver });
    try {
      let status = "";
      for (let i = 0; i < 100 && status !== "ready"; i++) {
        status = (await b.fetch(`/v1/instances/${name}`, { key })).body.data.status;
        await new Promise((res) => setTimeout(res, 20));
      }
      expect(status).toBe("ready");
      expect(driver.guests.size).toBe(1);
    } finally {
      await b.close();
    }
  });

  it("the real cvmd exits 0 on SIGTERM", async () => {
    const dir = tempDir();
    dirs.push(dir);
    const p = await startCvmd({ CVM_DATA_DIR: dir.path, CVM_DRIVER: "none" });
    expect(await p.kill("SIGTERM")).toBe(0);
    expect(p.logs.join("\n")).toContain("guests left running");
  });
});
