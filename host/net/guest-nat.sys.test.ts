import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { run } from "../../shared/util/run.js";
import { attachStandIn, type GuestStandIn } from "../../test/support/guest-stand-in.js";
import { NetnsGuestNetwork } from "./guest-network.js";
import { prerequisites } from "../../test/support/prerequisites.js";

/**
 * CVM_GUEST_NAT=on against a guest that tries every destination it must not reach. "The internet" is a namespace
 * this test creates, holding a /28 of the documentation range 198.51.100.0/24 that the host routes only into it.
 * A probe on the host end of the veth counts and drops anything else the guest namespace lets out, so no packet
 * leaves the machine even if the filter under test were wrong.
 */
const why = prerequisites("guest NAT tests", { root: true, tools: [["ip", ["-V"]], ["nft", ["--version"]], ["dnsmasq", ["--version"]], ["bridge", ["-V"]], ["ping", ["-V"]]] });

const tag = randomBytes(3).toString("hex");
const n = Number.parseInt(tag.slice(0, 4), 16);
const octet = 130 + (n % 30);
const base = 16 * ((n >> 5) % 16);
const PUBLIC = `198.51.100.${base + 1}`;
/** Stands in for an inference upstream's address: public, but handed to the network as blocked. */
const UPSTREAM = `198.51.100.${base + 2}`;

describe.skipIf(why !== null)("guest NAT: public unicast only", async () => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), "cvm-nat-"));
  await chmod(stateDir, 0o711);
  const opts = {
    stateDir,
    netns: `cvmn-${tag}`,
    bridge: `brn-${tag}`,
    hostVeth: `cnh-${tag}`,
    nsVeth: `cnn-${tag}`,
    hostTable: `cvmn_${tag}`,
    pool: `10.${octet}.0.0/24`,
    link: `10.${octet}.255.0/31`,
    sshPorts: { from: 23440 + (n % 20) * 3, to: 23442 + (n % 20) * 3 },
    nat: true,
    blockedDestinations: [UPSTREAM],
  };
  const network = new NetnsGuestNetwork(opts);
  const INET = `cvmi-${tag}`;
  const INET_LINK = `cvi-${tag}`;
  const HOST_SIDE = `10.${octet}.254.0`;
  const INET_SIDE = `10.${octet}.254.1`;
  const PROBE = `probe_${tag}`;
  let guest: GuestStandIn;

  const inNs = (ns: string, cmd: string, ...args: string[]) => run("ip", ["netns", "exec", ns, cmd, ...args], { timeoutMs: 20_000 });
  const pings = (dst: string) => inNs(guest.ns, "ping", "-c", "2", "-W", "1", dst).then(() => true, () => false);
  const counter = async (ns: string | null, family: string, table: string, name: string) => {
    const args = ["-j", "list", "counter", family, table, name];
    const { stdout } = ns ? await inNs(ns, "nft", ...args) : await run("nft", args);
    return (JSON.parse(stdout) as { nftables: Array<{ counter?: { packets: number } }> }).nftables.find((o) => o.counter)!.counter!.packets;
  };
  const leaked = () => counter(null, "netdev", PROBE, "leaked");
  const refused = () => counter(opts.netns, "inet", "cvm_guest", "nat_forbidden_drops");

  beforeAll(async () => {
    await run("ip", ["netns", "add", INET]);
    await run("ip", ["link", "add", INET_LINK, "type", "veth", "peer", "name", "eth0", "netns", INET]);
    await run("ip", ["addr", "add", `${HOST_SIDE}/31`, "dev", INET_LINK]);
    await run("ip", ["link", "set", INET_LINK, "up"]);
    await run("ip", ["-n", INET, "addr", "add", `${INET_SIDE}/31`, "dev", "eth0"]);
    for (const a of [PUBLIC, UPSTREAM]) await run("ip", ["-n", INET, "addr", "add", `${a}/32`, "dev", "lo"]);
    await run("ip", ["-n", INET, "link", "set", "lo", "up"]);
    await run("ip", ["-n", INET, "link", "set", "eth0", "up"]);
    await run("ip", ["-n", INET, "route", "add", "default", "via", HOST_SIDE]);
    await run("ip", ["route", "add", `198.51.100.${base}/28`, "via", INET_SIDE, "dev", INET_LINK]);

    await network.ensure();
    guest = await attachStandIn(network, { name: `cvmn-g-${tag}`, instanceId: `nat-${tag}`, index: 2 });
    const probe = [
      `table netdev ${PROBE} {`,
      `  counter leaked {}`,
      `  chain in {`,
      `    type filter hook ingress device "${opts.hostVeth}" priority -500; policy accept;`,
      `    ip saddr ${guest.att.ip} ip daddr != ${PUBLIC} counter name "leaked" drop`,
      `  }`,
      `}`,
    ];
    await run("nft", ["-f", "-"], { input: probe.join("\n") + "\n", timeoutMs: 10_000 });
  }, 60_000);

  afterAll(async () => {
    await guest?.remove();
    await run("nft", ["delete", "table", "netdev", PROBE]).catch(() => undefined);
    await run("ip", ["route", "del", `198.51.100.${base}/28`]).catch(() => undefined);
    await run("ip", ["link", "del", INET_LINK]).catch(() => undefined);
    await run("ip", ["netns", "del", INET]).catch(() => undefined);
    await network.destroy().catch((e) => console.warn(`cleanup: ${e}`));
    await rm(stateDir, { recursive: true, force: true });
  });

  test("a public address is reached (through the host's masquerade)", async () => {
    expect(await pings(PUBLIC)).toBe(true);
    expect(await leaked()).toBe(0);
  });

  test.each([
    ["RFC 1918 10/8 (the internet namespace's own link, routed and answering)", () => INET_SIDE],
    ["RFC 1918 172.16/12", () => `172.16.${octet}.9`],
    ["RFC 1918 192.168/16", () => `192.168.${octet}.9`],
    ["carrier-grade NAT 100.64/10", () => `100.64.${octet}.9`],
    ["link-local metadata 169.254.169.254", () => "169.254.169.254"],
    ["the host's own address", () => HOST_SIDE],
    ["the host end of the guest link", () => network.cfg.hostLinkIp],
    ["an inference upstream's address (public, routed and answering)", () => UPSTREAM],
  ])("nothing gets through to %s", async (_what, dst) => {
    const r0 = await refused();
    expect(await pings(dst())).toBe(false);
    expect(await leaked()).toBe(0);
    // Refused (and counted) in the guest namespace, not merely unanswered.
    expect(await refused()).toBeGreaterThanOrEqual(r0 + 2);
  });
});
