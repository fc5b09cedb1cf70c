import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AgentLink, UnixSocketConnector, type EgressSample } from "../../host/link/index.js";
import { run } from "../../shared/util/run.js";
import { agentArgs, buildAgent, freePort, killStandIn, makeGuestRoot, once, removeRoot, spawnAgent, startSshd, testLogger, type AgentProcess, type GuestRoot } from "./helpers.js";
import { prerequisites } from "../support/prerequisites.js";

const IP = "/usr/sbin/ip";
const NFT = "/usr/sbin/nft";
const missing = prerequisites("egress netns test", { root: true, files: [IP, NFT] });

const tag = String(process.pid % 100000);
const GUEST_NS = `cvmt-g-${tag}`;
const PEER_NS = `cvmt-p-${tag}`;
const VG = `cvmvg${tag}`;
const VP = `cvmvp${tag}`;
const DATAGRAMS = 1000;
const PAYLOAD = 1000;
const PORT = 9109;

const RECEIVER = `
const s = require("node:dgram").createSocket("udp4");
let bytes = 0, n = 0;
s.on("message", (m) => { bytes += m.length; n++; });
s.bind(${PORT}, "10.203.0.1", () => process.stdout.write("bound\\n"));
process.on("SIGTERM", () => { process.stdout.write(JSON.stringify({ bytes, n }) + "\\n"); process.exit(0); });
`;
const sender = (n: number) => `
const s = require("node:dgram").createSocket("udp4");
const buf = Buffer.alloc(${PAYLOAD}, 0x61);
(async () => {
  for (let i = 0; i < ${n}; i++) {
    await new Promise((r, j) => s.send(buf, ${PORT}, "10.203.0.1", (e) => (e ? j(e) : r())));
    // Paced so the receiver's socket buffer keeps up and its byte count can be checked exactly too.
    if (i % 20 === 19) await new Promise((r) => setTimeout(r, 3));
  }
  s.close();
})().catch((e) => { console.error(e); process.exit(1); });
`;
const SENDER = sender(DATAGRAMS);

describe.skipIf(missing !== null)("guest egress counter in a network namespace", () => {
  let root: GuestRoot;
  let agent: AgentProcess | undefined;
  let receiver: ChildProcess | undefined;

  beforeAll(async () => {
    buildAgent();
    await run(IP, ["netns", "del", GUEST_NS]).catch(() => undefined);
    await run(IP, ["netns", "del", PEER_NS]).catch(() => undefined);
    await run(IP, ["netns", "add", GUEST_NS]);
    await run(IP, ["netns", "add", PEER_NS]);
    await run(IP, ["link", "add", VG, "type", "veth", "peer", "name", VP]);
    await run(IP, ["link", "set", VG, "netns", GUEST_NS]);
    await run(IP, ["link", "set", VP, "netns", PEER_NS]);
    for (const [ns, dev, addr] of [
      [GUEST_NS, VG, "10.203.0.2/30"],
      [PEER_NS, VP, "10.203.0.1/30"],
    ] as const) {
      // No IPv6 autoconfiguration chatter (router/neighbour solicitations) in the count.
      await run(IP, ["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]);
      await run(IP, ["-n", ns, "addr", "add", addr, "dev", dev]);
      await run(IP, ["-n", ns, "link", "set", "lo", "up"]);
      await run(IP, ["-n", ns, "link", "set", dev, "up"]);
    }
    root = await makeGuestRoot();
  });

  afterAll(async () => {
    receiver?.kill("SIGKILL");
    if (root) await killStandIn(root);
    await agent?.kill("SIGKILL");
    await run(IP, ["netns", "del", GUEST_NS]).catch(() => undefined);
    await run(IP, ["netns", "del", PEER_NS]).catch(() => undefined);
    if (root) await removeRoot(root);
  });

  test("egress messages at the host link show the bytes the guest sent", async () => {
    const rx = spawn(IP, ["netns", "exec", PEER_NS, process.execPath, "-e", RECEIVER], { stdio: ["ignore", "pipe", "inherit"] });
    receiver = rx;
    let rxOut = "";
    rx.stdout!.on("data", (d) => (rxOut += String(d)));
    for (let i = 0; i < 100 && !rxOut.includes("bound"); i++) await new Promise((r) => setTimeout(r, 50));
    expect(rxOut).toContain("bound");

    const sock = join(root.dir, "agent.sock");
    agent = spawnAgent(agentArgs(root, ["--unix", sock, "--nft", NFT, "--nft-wrapper", `${IP} netns exec ${GUEST_NS}`, "--egress-ms", "200"]), "egress");
    const link = new AgentLink({ connector: new UnixSocketConnector(sock), logger: testLogger("link"), instanceId: "egress", backoff: { initialMs: 50, maxMs: 500 } });
    const samples: EgressSample[] = [];
    link.on("egress", (s) => samples.push(s));
    link.start();
    const waitFor = async (pred: (s: EgressSample) => boolean, what: string) => {
      for (let i = 0; i < 200; i++) {
        const hit = samples.find(pred);
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`no egress sample ${what}; last: ${JSON.stringify(samples.at(-1))}`);
    };
    const before = await waitFor(() => true, "at all");
    // The agent installed its table inside the guest namespace, not on this host.
    const { stdout } = await run(IP, ["netns", "exec", GUEST_NS, NFT, "list", "table", "inet", "cvm_guest"]);
    expect(stdout).toMatch(/counter name "egress"/);
    await expect(run(NFT, ["list", "table", "inet", "cvm_guest"])).rejects.toThrow();

    await run(IP, ["netns", "exec", GUEST_NS, process.execPath, "-e", SENDER], { timeoutMs: 60_000 });
    const ipUdpOverhead = 20 + 8;
    const expectedBytes = DATAGRAMS * (PAYLOAD + ipUdpOverhead);
    const after = await waitFor((s) => s.bytes - before.bytes >= expectedBytes && Date.parse(s.sampled_at) > Date.parse(before.sampled_at), `≥ ${expectedBytes} bytes`);
    await new Promise((r) => setTimeout(r, 500)); // let a later sample confirm nothing else trickles in
    const last = samples.at(-1)!;
    const deltaBytes = last.bytes - before.bytes;
    const deltaPackets = last.packets - before.packets;
    console.log(`egress: ${deltaBytes} bytes in ${deltaPackets} packets observed (expected ${expectedBytes} bytes, ${DATAGRAMS} packets)`);
    expect(after.bytes - before.bytes).toBeGreaterThanOrEqual(expectedBytes);
    expect(deltaBytes).toBeLessThanOrEqual(expectedBytes + 2000);
    expect(deltaPackets).toBeGreaterThanOrEqual(DATAGRAMS);
    expect(deltaPackets).toBeLessThanOrEqual(DATAGRAMS + 10);

    const exited = new Promise((r) => rx.once("exit", r));
    rx.kill("SIGTERM");
    await exited;
    expect(JSON.parse(rxOut.split("\n").filter(Boolean).at(-1)!)).toEqual({ bytes: DATAGRAMS * PAYLOAD, n: DATAGRAMS });

    // A restarted agent keeps the existing counter (no second rule, no reset).
    await agent.kill("SIGKILL");
    agent = spawnAgent(agentArgs(root, ["--unix", sock, "--nft", NFT, "--nft-wrapper", `${IP} netns exec ${GUEST_NS}`, "--egress-ms", "200"]), "egress2");
    const n = samples.length;
    await waitFor((s) => samples.indexOf(s) >= n, "after restart");
    expect(samples.at(-1)!.bytes).toBeGreaterThanOrEqual(last.bytes);
    const rules = await run(IP, ["netns", "exec", GUEST_NS, NFT, "list", "chain", "inet", "cvm_guest", "out"]);
    expect(rules.stdout.match(/counter name "egress"/g)).toHaveLength(1);
    await link.close();
  });

  test("a pool guest's egress before its claim is not in the samples after the claim (also across an agent restart)", async () => {
    await agent?.kill("SIGKILL");
    const sshd = await startSshd(root);
    const sock = join(root.dir, "agent.sock");
    const args = agentArgs(root, ["--unix", sock, "--nft", NFT, "--nft-wrapper", `${IP} netns exec ${GUEST_NS}`, "--egress-ms", "200", "--openclaw-port", String(await freePort())]);
    agent = spawnAgent(args, "egress-claim");
    const link = new AgentLink({ connector: new UnixSocketConnector(sock), logger: testLogger("link"), instanceId: "egress-claim", backoff: { initialMs: 50, maxMs: 500 } });
    const samples: EgressSample[] = [];
    link.on("egress", (s) => samples.push(s));
    const waitFor = async (pred: (s: EgressSample) => boolean, what: string, from = 0) => {
      for (let i = 0; i < 200; i++) {
        const hit = samples.slice(from).find(pred);
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`no egress sample ${what}; last: ${JSON.stringify(samples.at(-1))}`);
    };
    try {
      link.start();
      const prepared = once(link, "prepared", 20_000);
      await link.prepare();
      await prepared;
      // Before the claim: 1000 datagrams (≈ 1 MB) the tenant must not pay for.
      const pre = await waitFor(() => true, "before the claim");
      await run(IP, ["netns", "exec", GUEST_NS, process.execPath, "-e", SENDER], { timeoutMs: 60_000 });
      const perPacket = PAYLOAD + 20 + 8;
      await waitFor((s) => s.bytes - pre.bytes >= DATAGRAMS * perPacket, "with the pre-claim traffic");

      const ready = once(link, "ready", 20_000);
      await link.setup({ public_key: root.tenantKey.publicLine, agent: "openclaw", inference_model: "m-1", gateway_address: "http://127.0.0.1:18790/v1", instance_name: "egress01" });
      const n = samples.length;
      const first = await waitFor(() => true, "after the claim", n);
      expect(first.bytes).toBeLessThan(2000);
      await ready;

      const POST = 300;
      await run(IP, ["netns", "exec", GUEST_NS, process.execPath, "-e", sender(POST)], { timeoutMs: 60_000 });
      await waitFor((s) => s.bytes >= POST * perPacket, "with the post-claim traffic", n);
      await new Promise((r) => setTimeout(r, 500));
      const last = samples.at(-1)!;
      console.log(`egress after claim: ${last.bytes} bytes / ${last.packets} packets (post-claim traffic ${POST * perPacket} bytes; pre-claim ${DATAGRAMS * perPacket} bytes excluded)`);
      expect(last.bytes).toBeGreaterThanOrEqual(POST * perPacket);
      expect(last.bytes).toBeLessThanOrEqual(POST * perPacket + 2000);
      expect(last.packets).toBeLessThanOrEqual(POST + 10);

      // The baseline is persisted: a restarted agent keeps reporting post-claim traffic only.
      await agent.kill("SIGKILL");
      const m = samples.length;
      agent = spawnAgent(args, "egress-claim2");
      const after = await waitFor(() => true, "after the agent restart", m);
      expect(after.bytes).toBeGreaterThanOrEqual(last.bytes);
      expect(after.bytes).toBeLessThanOrEqual(last.bytes + 2000);
    } finally {
      await link.close();
      await sshd.stop();
    }
  });
});
