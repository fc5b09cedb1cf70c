/**
 * Rfc2136Provider against a real BIND 9 (Debian bind9) that this file starts as root on
 * 127.0.0.1:<random port> with a throwaway config and zone, and stops and deletes afterwards.
 * What BIND accepts, and what `dig` then sees, is the proof that the update and its TSIG are right.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { parseDnsConfig } from "../../host/dns/dns-config.js";
import { startDns } from "../../host/dns/dns-service.js";
import { DnsUpdateError, Rfc2136Provider, type Rfc2136Config } from "../../host/dns/rfc2136-provider.js";
import { InstanceStore } from "../../host/store/instances.js";
import { TenantStore } from "../../host/store/tenants.js";
import { run } from "../../shared/util/run.js";
import { startTestDaemon, tempDir } from "../support/daemon.js";
import { FakeDriver } from "../support/fake-driver.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { DIG, dig } from "./dig.js";
import { loopbackSsh, until } from "./loopback-driver.js";
import { prerequisites } from "../support/prerequisites.js";

const NAMED = "/usr/sbin/named";

// Root because named runs as root here; NAMED comes from Debian's bind9.
const skipReason = prerequisites("the RFC 2136 tests against BIND", { root: true, tools: [[NAMED, ["-v"]], DIG] });

/** A port free on both UDP and TCP at this moment (named binds both). */
async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const udpFree = await new Promise<boolean>((resolve) => {
      const u = createSocket("udp4");
      u.once("error", () => resolve(false));
      u.bind(port, "127.0.0.1", () => u.close(() => resolve(true)));
    });
    if (udpFree) return port;
  }
  throw new Error("no port free on both UDP and TCP");
}

const ZONE = "cvm.test";

describe.skipIf(skipReason !== null)("Rfc2136Provider against BIND 9", () => {
  const dir = mkdtempSync(join(tmpdir(), "cvm-bind-"));
  const secret = randomBytes(32);
  const grantless = randomBytes(32);
  let port: number;
  let named: ChildProcess | undefined;
  let namedLog = "";
  let cfg: Rfc2136Config;

  beforeAll(async () => {
    port = await freePort();
    writeFileSync(
      join(dir, `${ZONE}.zone`),
      [`$TTL 300`, `@ IN SOA ns.${ZONE}. hostmaster.${ZONE}. 1 3600 600 86400 30`, `@ IN NS ns.${ZONE}.`, `ns IN A 127.0.0.1`, ``].join("\n"),
    );
    writeFileSync(
      join(dir, "named.conf"),
      `options {
  directory "${dir}";
  pid-file "${dir}/named.pid";
  session-keyfile "${dir}/session.key";
  listen-on port ${port} { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  notify no;
};
controls { };
key "cvmd-test" { algorithm hmac-sha256; secret "${secret.toString("base64")}"; };
key "no-grant" { algorithm hmac-sha256; secret "${grantless.toString("base64")}"; };
zone "${ZONE}" {
  type primary;
  file "${dir}/${ZONE}.zone";
  update-policy { grant cvmd-test subdomain ${ZONE}. A AAAA; };
};
`,
    );
    await run("/usr/bin/named-checkconf", [join(dir, "named.conf")], { timeoutMs: 10_000 });
    // -g: foreground, logging to stderr, which tells when it is serving.
    named = spawn(NAMED, ["-g", "-c", join(dir, "named.conf"), "-n", "1"], { stdio: ["ignore", "ignore", "pipe"] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`named did not start within 20 s:\n${namedLog}`)), 20_000);
      named!.stderr!.on("data", (c: Buffer) => {
        if (namedLog.length < 200_000) namedLog += c.toString();
        if (/\brunning\b/.test(namedLog)) {
          clearTimeout(timer);
          resolve();
        }
      });
      named!.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`named exited (${code}):\n${namedLog}`));
      });
    });
    cfg = { server: { host: "127.0.0.1", port }, zone: ZONE, key: { name: "cvmd-test", secret }, ttlSeconds: 30, timeoutMs: 5_000 };
  }, 60_000);

  afterAll(async () => {
    if (named && named.exitCode === null) {
      const exited = new Promise((r) => named!.once("exit", r));
      named.kill("SIGTERM");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (named.exitCode === null) named.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const at = () => ({ host: "127.0.0.1", port });
  const host = `abcdefgh.acme.${ZONE}`;

  test("upsert publishes A and AAAA; a second upsert replaces them; remove makes the name NXDOMAIN", async () => {
    const p = new Rfc2136Provider(cfg);
    expect((await dig(at(), host)).status).toBe("NXDOMAIN");

    await p.upsert(host, { a: ["127.0.0.1"], aaaa: ["::1"] });
    const a = await dig(at(), host, "A");
    expect(a.status, namedLog).toBe("NOERROR");
    expect(a.answers).toEqual([{ name: `${host}.`, ttl: 30, type: "A", data: "127.0.0.1" }]);
    expect((await dig(at(), host, "AAAA")).answers).toEqual([{ name: `${host}.`, ttl: 30, type: "AAAA", data: "::1" }]);

    await p.upsert(host, { a: ["127.0.0.2", "127.0.0.3"] });
    expect((await dig(at(), host, "A")).answers.map((r) => r.data).sort()).toEqual(["127.0.0.2", "127.0.0.3"]);
    expect((await dig(at(), host, "AAAA")).answers).toEqual([]);

    await p.remove(host);
    const gone = await dig(at(), host, "A");
    expect(gone.status).toBe("NXDOMAIN");
    expect(gone.authority).toMatchObject([{ type: "SOA" }]);
    // Idempotent: removing what is not there is fine.
    await p.remove(host);
  });

  test("a wrong secret is NOTAUTH/BADSIG, an unknown key NOTAUTH/BADKEY, a key without a grant REFUSED; nothing changes", async () => {
    const good = new Rfc2136Provider(cfg);
    await good.upsert(host, { a: ["127.0.0.9"] });

    const cases: Array<[string, Rfc2136Config, string, string | null]> = [
      ["wrong secret", { ...cfg, key: { name: "cvmd-test", secret: randomBytes(32) } }, "NOTAUTH", "BADSIG"],
      ["unknown key name", { ...cfg, key: { name: "nobody", secret } }, "NOTAUTH", "BADKEY"],
      ["key without a grant", { ...cfg, key: { name: "no-grant", secret: grantless } }, "REFUSED", null],
    ];
    for (const [what, c, rcode, tsigError] of cases) {
      const p = new Rfc2136Provider(c);
      const err = await p.upsert(host, { a: ["127.0.0.66"] }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err, what).toBeInstanceOf(DnsUpdateError);
      expect({ what, rcode: (err as DnsUpdateError).rcode, tsigError: (err as DnsUpdateError).tsigError }).toEqual({ what, rcode, tsigError });
      await expect(p.remove(host), what).rejects.toThrow(DnsUpdateError);
    }
    expect((await dig(at(), host, "A")).answers.map((r) => r.data)).toEqual(["127.0.0.9"]);
    await good.remove(host);
  });

  test("a clock an hour off is BADTIME", async () => {
    const skewed = new Rfc2136Provider(cfg, () => new Date(Date.now() + 3600_000));
    const err = (await skewed.upsert(host, { a: ["127.0.0.1"] }).catch((e: unknown) => e)) as DnsUpdateError;
    expect(err).toBeInstanceOf(DnsUpdateError);
    expect(err.rcode).toBe("NOTAUTH");
    expect(err.tsigError).toBe("BADTIME");
    expect((await dig(at(), host)).status).toBe("NXDOMAIN");
  });

  test("names outside the zone are refused before anything is sent; an unreachable server is an error", async () => {
    const p = new Rfc2136Provider(cfg);
    await expect(p.upsert("abcdefgh.acme.example.com", { a: ["127.0.0.1"] })).rejects.toThrow(/not a name inside zone cvm.test/);
    await expect(p.upsert(ZONE, { a: ["127.0.0.1"] })).rejects.toThrow(/not a name inside zone/);
    const closed = new Rfc2136Provider({ ...cfg, server: { host: "127.0.0.1", port: await freePort() }, timeoutMs: 2_000 });
    await expect(closed.upsert(host, { a: ["127.0.0.1"] })).rejects.toThrow(/ECONNREFUSED/);
  });

  test("cvmd's wiring: CVM_DNS_* config, sync() from the daemon's store after a start, publish/withdraw", async () => {
    const dataDir = tempDir("cvm-dns-bind-daemon-");
    const fake = new FakeDriver();
    const d = await startTestDaemon({ dataDir: dataDir.path, driver: loopbackSsh(fake), env: { CVM_BASE_DOMAIN: ZONE } });
    try {
      const acme = await d.tenant("acme");
      const create = async () => {
        const r = await d.fetch("/v1/instances", { key: acme.apiKey, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: sshKeyPair("ed25519").public }) });
        return r.body.data as { name: string; hostname: string };
      };
      const get = async (name: string) => (await d.fetch(`/v1/instances/${name}`, { key: acme.apiKey })).body.data;
      const ready = await create();
      await until(() => get(ready.name), (i) => i.status === "ready");
      fake.failWith = "boot_timeout";
      const failed = await create();
      await until(() => get(failed.name), (i) => i.status === "failed");
      fake.failWith = null;

      const env: Record<string, string> = {
        CVM_DNS_PROVIDER: "rfc2136",
        CVM_DNS_UPDATE_SERVER: `127.0.0.1:${port}`,
        CVM_DNS_TSIG_KEY_NAME: "cvmd-test",
        CVM_DNS_TSIG_SECRET: secret.toString("base64"),
      };
      const dns = await startDns(parseDnsConfig((n) => env[n], d.config.baseDomain), { baseDomain: d.config.baseDomain, tenants: new TenantStore(d.db), instances: new InstanceStore(d.db) });
      expect(dns.provider.name).toBe("rfc2136");
      expect(dns.server).toBeNull();
      // What cvmd does after adoption settles: the ready instance appears, the failed one is withdrawn.
      expect(await dns.sync()).toEqual({ published: 1, withdrawn: 1, failed: [] });
      expect((await dig(at(), ready.hostname)).answers).toMatchObject([{ type: "A", data: "127.0.0.1" }]);
      expect((await dig(at(), failed.hostname)).status).toBe("NXDOMAIN");

      // What the engine does on delete (before `terminated`), and on ready.
      await d.fetch(`/v1/instances/${ready.name}`, { method: "DELETE", key: acme.apiKey });
      await dns.withdraw(ready.hostname);
      expect((await dig(at(), ready.hostname)).status).toBe("NXDOMAIN");
      await dns.publish(failed.hostname, "[fd00::7]");
      expect((await dig(at(), failed.hostname, "AAAA")).answers).toMatchObject([{ data: "fd00::7" }]);
      await dns.withdraw(failed.hostname);
      await dns.close();
    } finally {
      await d.close();
      dataDir.remove();
    }
  });
});
