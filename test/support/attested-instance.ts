/**
 * An instance a tenant can check with `cvm-verify --api` and then log in to: the real cvmd (real
 * HTTP, real SQLite) whose FakeDriver guest becomes ready with its SSH address on a TCP forward to a
 * real OpenSSH sshd, and whose attestation answers carry quotes signed under a test PKI over the real
 * REPORTDATA (the tenant's nonce and the host keys cvmd lists) and the RTMR3 of the guest's event log.
 *
 * Test doubles, for what cannot exist here: the FakeDriver (no VM) and fixtureQuoter (no TDX
 * hardware; the verifier pins its root through MainDeps.rootCaDer). The sshd, the daemon, the API,
 * the verifier and the ssh client are the real ones.
 */
import { writeFileSync } from "node:fs";
import { createServer, connect, type Server } from "node:net";
import { join } from "node:path";
import { ManualClock } from "../../host/clock.js";
import { main } from "../../guest/verify/main.js";
import { parsePublicKey } from "../../shared/ssh/public-key.js";
import { eventDigest, QuoteVerifier, replayRtmr } from "../../shared/tdx/index.js";
import type { Rtmr3Event } from "../../shared/protocol/messages.js";
import type { Fixture } from "../../shared/tdx/test/fixtures.js";
import { fixtureQuoter, type FixtureQuoter } from "../../shared/tdx/test/test-pki.js";
import { startTestDaemon, tempDir, type TestDaemon } from "./daemon.js";
import { FakeDriver } from "./fake-driver.js";
import { freePort, sshKeygen, startSshd, type Sshd } from "./sshd.js";
import { until } from "./waiting.js";

export const fixtureTime = (f: Fixture) => new Date(f.expected.at_unix! * 1000);

/** The RTMR3 events an agent records when it installs `publicKey` and activates OpenClaw. */
export function agentEvents(publicKey: string): Rtmr3Event[] {
  const ev = (t: string, payload: string): Rtmr3Event => ({ imr: 3, event_type: t, event: payload, digest: eventDigest(t, payload).toString("hex") });
  return [ev("ssh-authorized-key", parsePublicKey(publicKey).fingerprint), ev("openclaw-tree", "sha256:" + "ab".repeat(32))];
}

const pick = (f: Fixture, names: string[]) => Object.fromEntries(names.map((n) => [n === "mr_td" ? "mrtd" : n, String(f.expected[n])]));

/** The manifest a tenant would have built for fixture `f`'s TD: its MRTD and RTMR0–2. */
export function manifestFor(f: Fixture, over: Record<string, string> = {}): { image_id: string; expected_measurements: Record<string, string> } {
  return { image_id: "cvm-test-image", expected_measurements: { ...pick(f, ["mr_td", "rtmr0", "rtmr1", "rtmr2"]), ...over } };
}

/** A TCP forward on 127.0.0.1 whose destination port can be switched: the instance's SSH address. */
export interface SshForward {
  port: number;
  target: number;
  close(): Promise<void>;
}

async function sshForward(target: number): Promise<SshForward> {
  const port = await freePort();
  const fwd = { port, target };
  const server: Server = createServer((sock) => {
    const up = connect(fwd.target, "127.0.0.1");
    sock.pipe(up).pipe(sock);
    up.on("error", () => sock.destroy());
    sock.on("error", () => up.destroy());
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return Object.assign(fwd, { close: () => new Promise<void>((r) => server.close(() => r())) });
}

export interface AttestedInstance {
  dir: string;
  daemon: TestDaemon;
  driver: FakeDriver;
  quoter: FixtureQuoter;
  fixture: Fixture;
  name: string;
  /** The instance's hostname, from its record. */
  hostname: string;
  apiKey: string;
  sshd: Sshd;
  forward: SshForward;
  /** The guest's SSH host public key ("type base64 comment"). */
  hostKey: string;
  tenant: { privateKey: string; publicKeyFile: string; publicKey: string };
  files: { collateral: string; manifest: string };
  /** Runs `cvm-verify --api … --instance … --ssh-key … --manifest … --collateral …` plus `extra`, in-process, at the fixture's time. */
  verify(extra: string[], o?: { api?: string; quoter?: FixtureQuoter; at?: Date; collateral?: string; manifest?: string }): Promise<{ code: number; out: string; err: string; json(): any }>;
  close(): Promise<void>;
}

export async function startAttestedInstance(f: Fixture): Promise<AttestedInstance> {
  const dir = tempDir("cvm-tenant-verify-");
  const at = fixtureTime(f);
  const tenantKey = join(dir.path, "id_ed25519");
  const tenantPub = await sshKeygen(tenantKey, "tenant@laptop");
  const hostKeyPath = join(dir.path, "ssh_host_ed25519_key");
  const hostKey = await sshKeygen(hostKeyPath, "root@guest");
  const authorizedKeys = join(dir.path, "authorized_keys");
  writeFileSync(authorizedKeys, tenantPub + "\n"); // what the agent writes from the create request's public_key
  const sshd = await startSshd({ dir: dir.path, hostKey: hostKeyPath, authorizedKeys });
  const forward = await sshForward(sshd.port);

  const quoter = await fixtureQuoter(f, at);
  const collateral = join(dir.path, "collateral.json");
  writeFileSync(collateral, JSON.stringify(quoter.collateral));
  const manifest = join(dir.path, "manifest.json");
  writeFileSync(manifest, JSON.stringify(manifestFor(f)));

  const driver = new FakeDriver();
  driver.hostKeys = [hostKey];
  driver.sshEndpoint = { host: "127.0.0.1", port: forward.port, user: "root" };
  driver.eventLog = agentEvents(tenantPub);
  driver.image = { id: "cvm-test-image", expectedMeasurements: manifestFor(f).expected_measurements };
  // What the TD does for each request: REPORTDATA as the agent computes it, RTMR3 as its log extended it.
  driver.quoteFor = (_nonce, reportData) => quoter.quote(reportData, replayRtmr(driver.eventLog));

  const daemon = await startTestDaemon({
    dataDir: join(dir.path, "data"),
    driver,
    clock: new ManualClock(at),
    env: { CVM_COLLATERAL_FILE: collateral },
    quoteVerifier: new QuoteVerifier({ rootCaDer: quoter.pki.rootDer }),
  });
  const { apiKey } = await daemon.tenant("acme");
  const created = await daemon.fetch("/v1/instances", { key: apiKey, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: tenantPub }) });
  if (created.status !== 202) throw new Error(`create answered ${created.status}: ${JSON.stringify(created.body)}`);
  const name = created.body.data.name as string;
  const ready = await until(() => daemon.fetch(`/v1/instances/${name}`, { key: apiKey }), (r) => r.body.data.status === "ready");

  const files = { collateral, manifest };
  return {
    dir: dir.path,
    daemon,
    driver,
    quoter,
    fixture: f,
    name,
    hostname: ready.body.data.hostname as string,
    apiKey,
    sshd,
    forward,
    hostKey,
    tenant: { privateKey: tenantKey, publicKeyFile: tenantKey + ".pub", publicKey: tenantPub },
    files,
    async verify(extra, o = {}) {
      let out = "";
      let err = "";
      const args = ["--api", o.api ?? daemon.url, "--instance", name, "--ssh-key", tenantKey + ".pub", "--manifest", o.manifest ?? manifest, "--collateral", o.collateral ?? collateral, ...extra];
      const code = await main(args, {
        io: { out: (t) => (out += t), err: (t) => (err += t) },
        env: { CA_API_KEY: apiKey },
        now: () => o.at ?? at,
        rootCaDer: (o.quoter ?? quoter).pki.rootDer,
      });
      return { code, out, err, json: () => JSON.parse(out) };
    },
    async close() {
      await daemon.close();
      await forward.close();
      await sshd.stop();
      dir.remove();
    },
  };
}
