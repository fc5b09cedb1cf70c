/**
 * The embedded DNS server over the real daemon's SQLite store (StoreDnsRecordSource), queried with
 * `dig`: instances are created and deleted through the /v1 API and their hostnames follow.
 */
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { parseDnsConfig } from "../../host/dns/dns-config.js";
import { startDns, type DnsService } from "../../host/dns/dns-service.js";
import { InstanceStore } from "../../host/store/instances.js";
import { TenantStore } from "../../host/store/tenants.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { FakeDriver } from "../support/fake-driver.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { DIG, dig } from "./dig.js";
import { loopbackSsh, until } from "./loopback-driver.js";
import { prerequisites } from "../support/prerequisites.js";

const skipReason = prerequisites("the daemon DNS tests", { tools: [DIG] });

const ED = sshKeyPair("ed25519").public;
const BASE = "cvm.localhost";

describe.skipIf(skipReason !== null)("instance hostnames in DNS over the daemon's store", () => {
  const dir = tempDir("cvm-dns-daemon-");
  const fake = new FakeDriver();
  let d: TestDaemon;
  let dns: DnsService;
  let at: { host: string; port: number };
  let acme: { slug: string; apiKey: string };

  beforeAll(async () => {
    d = await startTestDaemon({ dataDir: dir.path, driver: loopbackSsh(fake) });
    acme = await d.tenant("acme");
    await d.tenant("globex");
    // Built the way cvmd builds it: CVM_DNS_* settings, then startDns over the daemon's stores.
    const env: Record<string, string> = { CVM_DNS_LISTEN: "127.0.0.1:0" };
    dns = await startDns(parseDnsConfig((n) => env[n], d.config.baseDomain), {
      baseDomain: d.config.baseDomain,
      tenants: new TenantStore(d.db),
      instances: new InstanceStore(d.db),
    });
    expect(dns.provider.name).toBe("embedded");
    // The store is the embedded server's truth: nothing to repair after a start.
    expect(await dns.sync()).toEqual({ published: 0, withdrawn: 0, failed: [] });
    at = { host: "127.0.0.1", port: dns.server!.port };
  });
  afterAll(async () => {
    await dns?.close();
    await d?.close();
    dir.remove();
  });

  const get = async (name: string) => (await d.fetch(`/v1/instances/${name}`, { key: acme.apiKey })).body.data;
  const create = async () => {
    const r = await d.fetch("/v1/instances", { key: acme.apiKey, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: ED }) });
    expect(r.status).toBe(202);
    return r.body.data as { name: string; hostname: string };
  };

  test("from create to delete: exists while provisioning, A record when ready, NXDOMAIN once deleted", async () => {
    fake.readyAfterMs = 800;
    const inst = await create();
    expect(inst.hostname).toBe(`${inst.name}.acme.${BASE}`);
    // Provisioning (the fake driver plans no address): the name exists, without data yet.
    const early = await dig(at, inst.hostname);
    expect(early.status).toBe("NOERROR");
    expect(early.answers).toEqual([]);
    expect(early.flags).toContain("aa");

    const ready = await until(() => get(inst.name), (i) => i.status === "ready");
    expect(ready.ssh).toMatchObject({ host: "127.0.0.1" });
    for (const extra of [[], ["+tcp"]]) {
      const r = await dig(at, inst.hostname, "A", extra);
      expect(r.status, r.raw).toBe("NOERROR");
      expect(r.flags).toContain("aa");
      expect(r.answers).toEqual([{ name: `${inst.hostname}.`, ttl: 30, type: "A", data: "127.0.0.1" }]);
    }
    expect((await dig(at, inst.hostname.toUpperCase())).answers).toHaveLength(1);
    // The same name under another tenant's slug, or a tenant that does not exist: NXDOMAIN.
    expect((await dig(at, `${inst.name}.globex.${BASE}`)).status).toBe("NXDOMAIN");
    expect((await dig(at, `${inst.name}.nosuchtenant.${BASE}`)).status).toBe("NXDOMAIN");
    expect((await dig(at, `${inst.name}.acme.example.com`)).status).toBe("REFUSED");

    const del = await d.fetch(`/v1/instances/${inst.name}`, { method: "DELETE", key: acme.apiKey });
    expect([200, 202]).toContain(del.status);
    await until(() => get(inst.name), (i) => i.status === "terminated");
    for (const extra of [[], ["+tcp"]]) {
      const gone = await dig(at, inst.hostname, "A", extra);
      expect(gone.status).toBe("NXDOMAIN");
      expect(gone.authority).toMatchObject([{ type: "SOA", name: `${BASE}.` }]);
    }
  });

  test("a failed instance keeps its name but no address; deleting it removes the name", async () => {
    fake.readyAfterMs = 0;
    fake.failWith = "boot_timeout";
    try {
      const inst = await create();
      await until(() => get(inst.name), (i) => i.status === "failed");
      const r = await dig(at, inst.hostname);
      expect(r.status).toBe("NOERROR");
      expect(r.answers).toEqual([]);
      await d.fetch(`/v1/instances/${inst.name}`, { method: "DELETE", key: acme.apiKey });
      await until(() => get(inst.name), (i) => i.status === "terminated");
      expect((await dig(at, inst.hostname)).status).toBe("NXDOMAIN");
    } finally {
      fake.failWith = null;
    }
  });
});
