/**
 * `cvm-verify --api` from the tenant's side, through the real API of a real cvmd, then a real
 * `ssh -o StrictHostKeyChecking=yes` into a real sshd on the instance's SSH address with the
 * known_hosts the verifier wrote. See test/support/attested-instance.ts for the two test doubles
 * (no VM, no TDX hardware). The attackers (a proxy replaying answers for another nonce, a second sshd
 * behind the SSH address) are real programs.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { main } from "../../guest/verify/main.js";
import { parsePublicKey } from "../../shared/ssh/public-key.js";
import { replayRtmr, reportDataFor } from "../../shared/tdx/index.js";
import { loadFixture } from "../../shared/tdx/test/fixtures.js";
import { fixtureQuoter } from "../../shared/tdx/test/test-pki.js";
import { agentEvents, fixtureTime, manifestFor, startAttestedInstance, type AttestedInstance } from "../support/attested-instance.js";
import { prerequisites } from "../support/prerequisites.js";
import { sshKeygen, sshStrict, startSshd, type Sshd } from "../support/sshd.js";
import { expectTenantVerifyNoTdx } from "../support/tenant-verify.js";

const missing = prerequisites("tenant-side cvm-verify with sshd", { root: true, files: ["/usr/sbin/sshd", "/usr/bin/ssh-keygen", "/usr/bin/ssh"] });

/** An attacker between the tenant and cvmd: forwards everything, but asks cvmd for attestation over its own nonce. */
async function nonceSwappingProxy(upstream: string, nonce: string): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const u = new URL(req.url!, "http://proxy");
    if (u.pathname.endsWith("/attestation")) u.searchParams.set("nonce", nonce);
    fetch(upstream + u.pathname + u.search, { headers: { Authorization: String(req.headers.authorization ?? "") } }).then(
      async (r) => {
        res.writeHead(r.status, { "Content-Type": "application/json" });
        res.end(await r.text());
      },
      () => res.destroy(),
    );
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe.skipIf(missing !== null)("cvm-verify --api: attested SSH from the tenant's machine (real cvmd, sshd, ssh)", () => {
  const f = loadFixture("tdx-v4-uptodate");
  let inst: AttestedInstance;
  let kh: string;
  /** A second sshd with its own host key: the man in the middle. */
  let mitm: Sshd;
  let mitmKey: string;
  /** The host key of another instance's TD. */
  let otherTdKey: string;

  const fresh = (n: string) => join(inst.dir, `known_hosts.${n}`);
  /** What the verifier writes: the instance's hostname and SSH address (with its port), the attested key. */
  const lineFor = (port: number, key: string) => `[${inst.hostname}]:${port},[127.0.0.1]:${port} ${key.split(" ").slice(0, 2).join(" ")} cvm:${inst.name}`;

  beforeAll(async () => {
    inst = await startAttestedInstance(f);
    kh = join(inst.dir, "known_hosts");
    const mitmKeyPath = join(inst.dir, "mitm_host_key");
    mitmKey = await sshKeygen(mitmKeyPath, "root@mitm");
    mkdirSync(join(inst.dir, "mitm"));
    mitm = await startSshd({ dir: join(inst.dir, "mitm"), hostKey: mitmKeyPath, authorizedKeys: join(inst.dir, "authorized_keys") });
    otherTdKey = await sshKeygen(join(inst.dir, "other_td_host_key"), "root@other-instance");
  });
  afterAll(async () => {
    await mitm?.stop();
    await inst?.close();
  });

  test("1. verified: exit 0, one known_hosts line for the instance's SSH address, and ssh -o StrictHostKeyChecking=yes logs in with it", async () => {
    writeFileSync(kh, `github.com ${mitmKey.split(" ").slice(0, 2).join(" ")}\n`);
    const r = await inst.verify(["--known-hosts", kh, "--json"]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const j = r.json();
    expect(j).toMatchObject({ ok: true, reason: null, mode: "tenant", instance: inst.name, status: "UpToDate", ssh: { host: "127.0.0.1", port: inst.forward.port } });
    expect(Object.values(j.checks).every((c: any) => c.ok)).toBe(true);
    expect(j.checks.report_data.actual).toBe(reportDataFor(Buffer.from(j.nonce, "hex"), [inst.hostKey]).toString("hex"));
    expect(j.checks.measurements).toMatchObject({ ok: true, checked: 4 });
    expect(j.checks.event_log).toMatchObject({ ok: true, events: 2 });
    expect(j.checks.ssh_key).toMatchObject({ ok: true, installed: [parsePublicKey(inst.tenant.publicKey).fingerprint] });
    expect(j.known_hosts).toEqual({ file: kh, lines: [lineFor(inst.forward.port, inst.hostKey)], replaced: 0, other_lines: 0 });
    expect(readFileSync(kh, "utf8")).toBe(`github.com ${mitmKey.split(" ").slice(0, 2).join(" ")}\n${lineFor(inst.forward.port, inst.hostKey)}\n`);

    const ssh = await sshStrict({ knownHosts: kh, identity: inst.tenant.privateKey, port: inst.forward.port, command: "echo attested-login-ok" });
    expect(ssh.stderr).not.toMatch(/verification failed|IDENTIFICATION HAS CHANGED/);
    expect(ssh.code).toBe(0);
    expect(ssh.stdout).toBe("attested-login-ok\n");

    // Without --known-hosts stdout is the line alone (for `>> ~/.ssh/known_hosts`), the report on stderr.
    const human = await inst.verify([]);
    expect(human.code).toBe(0);
    expect(human.out).toBe(lineFor(inst.forward.port, inst.hostKey) + "\n");
    expect(human.err).toMatch(/cvm-verify \(tenant, instance \w+ via .*\): OK/);
    expect(human.err).toContain(`connect      ssh -o StrictHostKeyChecking=yes -p ${inst.forward.port} root@127.0.0.1`);
  });

  describe("2. a man in the middle on the instance's SSH address", () => {
    test("cvmd lists the MITM's host key: exit 1 naming the REPORTDATA mismatch, nothing written, and ssh refuses", async () => {
      const honest = { hostKeys: inst.driver.hostKeys, quoteFor: inst.driver.quoteFor };
      const before = readFileSync(kh, "utf8");
      inst.forward.target = mitm.port;
      inst.driver.hostKeys = [mitmKey];
      // The instance's TD still binds its own key: it is the host that lies about which keys are the instance's.
      inst.driver.quoteFor = (nonce) => inst.quoter.quote(reportDataFor(nonce, [inst.hostKey]), replayRtmr(inst.driver.eventLog));
      try {
        const empty = fresh("mitm");
        for (const file of [kh, empty]) {
          const r = await inst.verify(["--known-hosts", file, "--json"]);
          expect(r.code).toBe(1);
          const j = r.json();
          expect(j.reason).toMatch(/^report_data: REPORTDATA does not bind this verifier's nonce and the 1 SSH host key\(s\) the answer lists/);
          expect(j.checks.quote.ok && j.checks.measurements.ok && j.checks.event_log.ok && j.checks.ssh_key.ok).toBe(true);
          expect(j.known_hosts).toBeNull();
        }
        expect(readFileSync(kh, "utf8")).toBe(before);
        expect(existsSync(empty)).toBe(false);
        const human = await inst.verify([]);
        expect(human.code).toBe(1);
        expect(human.out).toBe("");
        expect(human.err).toMatch(/known_hosts  nothing written/);

        // ssh through the MITM: refused with the verified line, and with no line at all.
        const pinned = await sshStrict({ knownHosts: kh, identity: inst.tenant.privateKey, port: inst.forward.port, command: "echo should-not-run" });
        expect(pinned.code).toBe(255);
        expect(pinned.stdout).toBe("");
        expect(pinned.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
        writeFileSync(empty, "");
        const unknown = await sshStrict({ knownHosts: empty, identity: inst.tenant.privateKey, port: inst.forward.port, command: "echo should-not-run" });
        expect(unknown.code).toBe(255);
        expect(unknown.stderr).toMatch(/Host key verification failed/);
      } finally {
        Object.assign(inst.driver, honest);
        inst.forward.target = inst.sshd.port;
      }
    });

    test("cvmd lists the true key but the address leads to the MITM: the verifier passes, and ssh refuses the MITM", async () => {
      inst.forward.target = mitm.port;
      try {
        const file = fresh("proxy");
        expect((await inst.verify(["--known-hosts", file])).code).toBe(0);
        expect(readFileSync(file, "utf8")).toBe(lineFor(inst.forward.port, inst.hostKey) + "\n");
        const r = await sshStrict({ knownHosts: file, identity: inst.tenant.privateKey, port: inst.forward.port, command: "echo should-not-run" });
        expect(r.code).toBe(255);
        expect(r.stderr).toMatch(/REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
      } finally {
        inst.forward.target = inst.sshd.port;
      }
    });
  });

  test("a line trusting another key for the address (an earlier trust-on-first-use) is kept, and the verifier warns about it", async () => {
    const file = fresh("tofu");
    const tofu = `[127.0.0.1]:${inst.forward.port} ${mitmKey.split(" ").slice(0, 2).join(" ")}`;
    writeFileSync(file, `${tofu}\n${lineFor(inst.forward.port, inst.hostKey).replace(/cvm:\w+$/, "cvm:earlier-run")}\n`);
    const r = await inst.verify(["--known-hosts", file, "--json"]);
    expect(r.code).toBe(0);
    expect(r.json().known_hosts).toMatchObject({ replaced: 1, other_lines: 1 });
    expect(readFileSync(file, "utf8")).toBe(`${tofu}\n${lineFor(inst.forward.port, inst.hostKey)}\n`);
    const human = await inst.verify(["--known-hosts", file]);
    expect(human.out).toMatch(/WARNING .* 1 other line\(s\) trusting other keys for these names, which ssh accepts too; remove them \(ssh-keygen -R/);
  });

  describe("3. each failure: exit 1 with its own reason, nothing written", () => {
    async function failsWith(reason: RegExp, extra: string[] = [], o: Parameters<AttestedInstance["verify"]>[1] = {}) {
      const file = fresh(`fail-${Math.random().toString(36).slice(2)}`);
      const r = await inst.verify(["--known-hosts", file, "--json", ...extra], o);
      expect(r.code, r.err).toBe(1);
      const j = r.json();
      expect(j.ok).toBe(false);
      expect(j.reason).toMatch(reason);
      expect(j.known_hosts).toBeNull();
      expect(existsSync(file)).toBe(false);
      return j;
    }

    test("a nonce the verifier did not draw (a proxy asked cvmd for its own nonce)", async () => {
      const theirs = "5e".repeat(32);
      const proxy = await nonceSwappingProxy(inst.daemon.url, theirs);
      try {
        const j = await failsWith(new RegExp(`^answer: the answer is for nonce ${theirs}, not the one this verifier drew \\([0-9a-f]{64}\\): a replayed or redirected answer`), [], { api: proxy.url });
        expect(j.checks.quote.ok).toBe(true);
        expect(j.checks.report_data.ok).toBe(false); // the quote binds the proxy's nonce, too
      } finally {
        proxy.server.close();
      }
    });

    test("another instance's quote (its TD, holding its own host key, quoted this verifier's nonce)", async () => {
      const honest = inst.driver.quoteFor;
      inst.driver.quoteFor = (nonce) => inst.quoter.quote(reportDataFor(nonce, [otherTdKey]), replayRtmr(inst.driver.eventLog));
      try {
        const j = await failsWith(/^report_data: REPORTDATA does not bind this verifier's nonce and the 1 SSH host key\(s\) the answer lists: the quote was made by another machine/);
        expect(j.reason).not.toMatch(/;/); // the only failure
        expect(j.checks.report_data.actual).toBe(reportDataFor(Buffer.from(j.nonce, "hex"), [otherTdKey]).toString("hex"));
      } finally {
        inst.driver.quoteFor = honest;
      }
    });

    test("a manifest mismatch", async () => {
      const other = join(inst.dir, "other-manifest.json");
      writeFileSync(other, JSON.stringify(manifestFor(f, { rtmr1: "11".repeat(48) })));
      const j = await failsWith(new RegExp(`^measurements: image manifest ${other}: measurements differ from the manifest: rtmr1$`), [], { manifest: other });
      expect(j.checks.measurements).toMatchObject({ mismatched: ["rtmr1"], matched: ["mrtd", "rtmr0", "rtmr2"] });
    });

    test("an event log naming another SSH key (the TD really installed someone else's key)", async () => {
      const honest = inst.driver.eventLog;
      const stranger = await sshKeygen(join(inst.dir, "stranger"), "stranger@elsewhere");
      inst.driver.eventLog = agentEvents(stranger);
      try {
        const strangerFp = parsePublicKey(stranger).fingerprint;
        const j = await failsWith(
          new RegExp(`^ssh_key: the RTMR3 event log says the agent installed SSH key ${strangerFp.replace(/[+/]/g, "\\$&")}, not \\(only\\) yours \\(${parsePublicKey(inst.tenant.publicKey).fingerprint.replace(/[+/]/g, "\\$&")} from`),
        );
        expect(j.checks.event_log.ok).toBe(true);
        expect(j.checks.ssh_key.installed).toEqual([strangerFp]);
      } finally {
        inst.driver.eventLog = honest;
      }
    });

    test("a TCB status the policy rejects (OutOfDate); accepted by name it passes", async () => {
      const gcp = loadFixture("gcp-cos-v4-outofdate");
      const quoter = await fixtureQuoter(gcp, fixtureTime(gcp));
      const collateral = join(inst.dir, "gcp-collateral.json");
      const manifest = join(inst.dir, "gcp-manifest.json");
      writeFileSync(collateral, JSON.stringify(quoter.collateral));
      writeFileSync(manifest, JSON.stringify(manifestFor(gcp)));
      const honest = inst.driver.quoteFor;
      inst.driver.quoteFor = (_nonce, reportData) => quoter.quote(reportData, replayRtmr(inst.driver.eventLog));
      try {
        const o = { quoter, at: fixtureTime(gcp), collateral, manifest };
        const j = await failsWith(/^quote: TCB status OutOfDate is not accepted \(accepted: UpToDate\)$/, [], o);
        expect(j.verdict.ok).toBe(true);
        expect(j.advisory_ids).toEqual(gcp.expected.advisory_ids);
        expect((await inst.verify(["--accept-tcb-status", "UpToDate,OutOfDate", "--json"], o)).code).toBe(0);
      } finally {
        inst.driver.quoteFor = honest;
      }
    });
  });

  test("no TDX (the answer says available: false): exit 2 with the reason, known_hosts untouched", async () => {
    const honest = inst.driver.quoteFor;
    inst.driver.quoteFor = null;
    const before = readFileSync(kh, "utf8");
    try {
      const r = await inst.verify(["--known-hosts", kh]);
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err).toBe(`cvm-verify: no TDX: instance ${inst.name} cannot attest (test double: no TDX); nothing written\n`);
      expect(readFileSync(kh, "utf8")).toBe(before);
      // The same as its own process (the check the VM E2E test runs against a TCG guest), with and without a known_hosts file.
      const o = { api: inst.daemon.url, apiKey: inst.apiKey, name: inst.name, manifest: inst.files.manifest, sshKey: inst.tenant.publicKeyFile, collateral: inst.files.collateral };
      expect(await expectTenantVerifyNoTdx({ ...o, knownHosts: kh })).toMatch(/\(test double: no TDX\)/);
      await expectTenantVerifyNoTdx({ ...o, knownHosts: fresh("no-tdx") });
    } finally {
      inst.driver.quoteFor = honest;
    }
  });

  test("cannot run (exit 2): a wrong API key, an unknown instance, a missing manifest, a missing SSH key", async () => {
    async function run(args: string[], env: Record<string, string> = { CA_API_KEY: inst.apiKey }) {
      let err = "";
      const code = await main(args, { io: { out: () => undefined, err: (t) => (err += t) }, env });
      return { code, err };
    }
    const base = ["--api", inst.daemon.url, "--instance", inst.name, "--manifest", inst.files.manifest, "--collateral", inst.files.collateral, "--ssh-key", inst.tenant.publicKeyFile];
    expect(await run(base, { CA_API_KEY: "ca_aaaaaaaa_bbbbbbbbbbbbbbbbbb" })).toMatchObject({ code: 2, err: expect.stringMatching(/HTTP 401 unauthenticated/) });
    expect(await run(base.map((a) => (a === inst.name ? "zzzzzzzz" : a)))).toMatchObject({ code: 2, err: expect.stringMatching(/HTTP 404 not_found/) });
    expect(await run(base.filter((a, i) => a !== "--manifest" && base[i - 1] !== "--manifest"))).toMatchObject({ code: 2, err: expect.stringMatching(/--manifest FILE is required/) });
    expect(await run(base.map((a) => (a === inst.tenant.publicKeyFile ? "/nonexistent/id.pub" : a)))).toMatchObject({ code: 2, err: expect.stringMatching(/cannot read --ssh-key/) });
    expect(await run(base, {})).toMatchObject({ code: 2, err: expect.stringMatching(/no API key: pass --key-file FILE or set CA_API_KEY/) });
  });
});
