import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, rm, stat } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { run } from "../../shared/util/run.js";
import { NetnsGuestNetwork } from "./guest-network.js";
import { attachStandIn, type GuestStandIn } from "../../test/support/guest-stand-in.js";
import { linkLocalOf } from "./tap-guard.js";
import { prerequisites } from "../../test/support/prerequisites.js";

/**
 * A root tenant against the real tap guard: two guest stand-ins (network namespaces on veths that take the place of
 * taps 2 and 3 in cvmd's real guest namespace, with cvmd's real rules, bridge, DHCP server and SSH forwards). The
 * attacker claims the victim's IPv4 (ARP replies, address + ping), MAC and IPv6 link-local address.
 */

const why = prerequisites("tap guard tests", { root: true, tools: [["ip", ["-V"]], ["nft", ["--version"]], ["dnsmasq", ["--version"]], ["bridge", ["-V"]], ["busybox", ["--help"]], ["python3", ["-V"]]] });

const RAW = fileURLToPath(new URL("./testdata/raw-frame.py", import.meta.url));
const tag = randomBytes(3).toString("hex");
const octet = 160 + (Number.parseInt(tag.slice(0, 2), 16) % 30);

// ---------------------------------------------------------------------------------------------------
// Hand-made frames

const macBytes = (m: string) => Buffer.from(m.replace(/:/g, ""), "hex");
function v6Bytes(a: string): Buffer {
  const [h, t] = a.split("::");
  const hs = h ? h.split(":") : [];
  const ts = t ? t.split(":") : [];
  const g = [...hs, ...Array<string>(8 - hs.length - ts.length).fill("0"), ...ts];
  return Buffer.from(g.map((x) => x.padStart(4, "0")).join(""), "hex");
}
function icmp6Checksum(src: Buffer, dst: Buffer, body: Buffer): number {
  const pseudo = Buffer.concat([src, dst, Buffer.from([0, 0, body.length >> 8, body.length & 0xff, 0, 0, 0, 58]), body]);
  let sum = 0;
  for (let i = 0; i < pseudo.length; i += 2) sum += (pseudo[i] << 8) | (pseudo[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}
/** An ICMPv6 message in an IPv6 packet in an Ethernet frame, hop limit 255 as neighbour discovery requires. */
function icmp6Frame(o: { srcMac: string; dstMac: string; src: string; dst: string; body: Buffer }): string {
  const src = v6Bytes(o.src);
  const dst = v6Bytes(o.dst);
  const body = Buffer.from(o.body);
  body.writeUInt16BE(icmp6Checksum(src, dst, body), 2);
  const ip6 = Buffer.concat([Buffer.from([0x60, 0, 0, 0, body.length >> 8, body.length & 0xff, 58, 255]), src, dst]);
  return Buffer.concat([macBytes(o.dstMac), macBytes(o.srcMac), Buffer.from([0x86, 0xdd]), ip6, body]).toString("hex");
}
/** Neighbour advertisement (override set) for `target`, with the sender's MAC as target link-layer address. */
function neighbourAdvert(srcMac: string, src: string, target: string): string {
  const body = Buffer.concat([Buffer.from([136, 0, 0, 0, 0x20, 0, 0, 0]), v6Bytes(target), Buffer.from([2, 1]), macBytes(srcMac)]);
  return icmp6Frame({ srcMac, dstMac: "33:33:00:00:00:01", src, dst: "ff02::1", body });
}
/** DHCPDISCOVER from 0.0.0.0 whose client hardware address (chaddr) is `chaddr`. */
function dhcpDiscover(srcMac: string, chaddr: string): string {
  const bootp = Buffer.alloc(240);
  bootp.writeUInt8(1, 0);
  bootp.writeUInt8(1, 1);
  bootp.writeUInt8(6, 2);
  bootp.writeUInt32BE(0x12345678, 4);
  macBytes(chaddr).copy(bootp, 28);
  bootp.writeUInt32BE(0x63825363, 236);
  const dhcp = Buffer.concat([bootp, Buffer.from([53, 1, 1, 255])]);
  const udp = Buffer.concat([Buffer.from([0, 68, 0, 67, (dhcp.length + 8) >> 8, (dhcp.length + 8) & 0xff, 0, 0]), dhcp]);
  const ip = Buffer.from([0x45, 0, (udp.length + 20) >> 8, (udp.length + 20) & 0xff, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += ip.readUInt16BE(i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
  ip.writeUInt16BE(~sum & 0xffff, 10);
  return Buffer.concat([macBytes("ff:ff:ff:ff:ff:ff"), macBytes(srcMac), Buffer.from([0x08, 0x00]), ip, udp]).toString("hex");
}
/** Echo request to all nodes. */
function echoRequest(srcMac: string, src: string): string {
  return icmp6Frame({ srcMac, dstMac: "33:33:00:00:00:01", src, dst: "ff02::1", body: Buffer.from([128, 0, 0, 0, 0, 1, 0, 1]) });
}

// ---------------------------------------------------------------------------------------------------

const inNs = (ns: string, cmd: string, ...args: string[]) => run("ip", ["netns", "exec", ns, cmd, ...args], { timeoutMs: 20_000 });
/** The namespace answers no pings (its filter), so a ping's outcome is read from the probe counters, not its exit. */
const ping = (ns: string, ...args: string[]) => inNs(ns, "ping", "-W", "1", ...args).catch(() => undefined);

/** What the SSH forward of an instance reaches: the stand-in sshd answers with its own name. */
function readForward(port: number): Promise<string> {
  return new Promise((resolve) => {
    let got = "";
    const s = net.connect({ host: "127.0.0.1", port });
    const t = setTimeout(() => (s.destroy(), resolve(got || "timeout")), 3_000);
    s.on("data", (d) => (got += d.toString()));
    s.on("end", () => (clearTimeout(t), resolve(got.trim())));
    s.on("error", (e) => (clearTimeout(t), resolve(`error ${(e as NodeJS.ErrnoException).code}`)));
  });
}

describe.skipIf(why !== null)("tap guard against a hostile guest (namespace stand-ins on cvmd's real rules)", async () => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), "cvm-guard-"));
  await chmod(stateDir, 0o711);
  const opts = {
    stateDir,
    netns: `cvmg-${tag}`,
    bridge: `brg-${tag}`,
    hostVeth: `cgh-${tag}`,
    nsVeth: `cgn-${tag}`,
    hostTable: `cvmg_${tag}`,
    pool: `10.${octet}.0.0/24`,
    link: `10.${octet}.255.0/31`,
    sshPorts: { from: 23410 + (octet % 10) * 3, to: 23412 + (octet % 10) * 3 },
  };
  const network = new NetnsGuestNetwork(opts);
  const bridgeIp = `10.${octet}.0.1`;
  const guests: Record<"victim" | "attacker", GuestStandIn> = {} as never;
  const spoofed = async (g: GuestStandIn) => (await network.spoofCounters()).get(g.att.instanceId)?.packets ?? 0;
  // What reaches the namespace's IP stack (before its filter, which refuses pings to the bridge), by source address.
  const PROBE = `probe_${tag}`;
  const echoes = async (ip: string) => {
    const out = (await inNs(opts.netns, "nft", "-j", "list", "counter", "inet", PROBE, `echo_${ip.replace(/\./g, "_")}`)).stdout;
    return (JSON.parse(out) as { nftables: Array<{ counter?: { packets: number } }> }).nftables.find((o) => o.counter)!.counter!.packets;
  };
  const neighbour = async (ip: string) => (await run("ip", ["-n", opts.netns, "neigh", "show", ip, "dev", opts.bridge])).stdout.trim();

  beforeAll(async () => {
    await network.ensure();
    for (const [who, index] of [["victim", 2], ["attacker", 3]] as const) {
      guests[who] = await attachStandIn(network, { name: `cvmg-${who.slice(0, 3)}-${tag}`, instanceId: `${who}-${tag}`, index });
    }
    const probe = [`table inet ${PROBE} {`];
    for (const g of Object.values(guests)) probe.push(`  counter echo_${g.att.ip.replace(/\./g, "_")} {}`);
    probe.push(`  chain input {`, `    type filter hook input priority -300; policy accept;`);
    for (const g of Object.values(guests)) probe.push(`    icmp type echo-request ip saddr ${g.att.ip} counter name "echo_${g.att.ip.replace(/\./g, "_")}"`);
    probe.push(`  }`, `}`);
    await run("ip", ["netns", "exec", opts.netns, "nft", "-f", "-"], { input: probe.join("\n") + "\n", timeoutMs: 10_000 });
    for (let i = 0; i < 50 && (await readForward(guests.victim.att.ssh.port)) !== guests.victim.att.instanceId; i++) await new Promise((r) => setTimeout(r, 100));
  }, 60_000);

  afterAll(async () => {
    for (const g of Object.values(guests)) await g.remove();
    await network.destroy().catch((e) => console.warn(`cleanup: ${e}`));
    await rm(stateDir, { recursive: true, force: true });
  });

  test("honest guests: reachable, forwards land on their own VM, permanent neighbours, static FDB, no learning", async () => {
    const { victim, attacker } = guests;
    const v0 = await echoes(victim.att.ip);
    const a0 = await echoes(attacker.att.ip);
    await ping(victim.ns, "-c", "2", bridgeIp);
    await ping(attacker.ns, "-c", "2", bridgeIp);
    expect(await echoes(victim.att.ip)).toBe(v0 + 2);
    expect(await echoes(attacker.att.ip)).toBe(a0 + 2);
    expect(await readForward(victim.att.ssh.port)).toBe(victim.att.instanceId);
    expect(await readForward(attacker.att.ssh.port)).toBe(attacker.att.instanceId);
    expect(await neighbour(victim.att.ip)).toBe(`${victim.att.ip} lladdr ${victim.att.mac} PERMANENT`);
    const port = JSON.parse((await run("ip", ["-n", opts.netns, "-d", "-j", "link", "show", "tap2"])).stdout)[0].linkinfo.info_slave_data;
    expect(port).toMatchObject({ isolated: true, learning: false });
    const fdb = (await run("bridge", ["-n", opts.netns, "fdb", "show", "dev", "tap2"])).stdout;
    expect(fdb).toContain(`${victim.att.mac} master ${opts.bridge} static`);
    expect(await spoofed(victim)).toBe(0);
  });

  test("a DHCP client without an address (0.0.0.0) gets its lease; dnsmasq's log does not grow with requests", async () => {
    const log = network.dhcp.logFile;
    const before = (await stat(log)).size;
    for (let i = 0; i < 3; i++) {
      const out = await inNs(guests.victim.ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "3", "-T", "1", "-s", "/bin/true");
      expect(out.stdout + out.stderr).toContain(`lease of ${guests.victim.att.ip} obtained`);
    }
    expect((await stat(log)).size).toBe(before);
  });

  test("IPv6: the victim's link-local as source, and an advertisement for it, are dropped and counted; the attacker's own passes", async () => {
    const { victim, attacker } = guests;
    const own = linkLocalOf(attacker.att.mac);
    const stolen = linkLocalOf(victim.att.mac);
    const raw = (frame: string, n: number) => inNs(attacker.ns, "python3", RAW, "eth0", String(n), frame);
    const c0 = await spoofed(attacker);
    await raw(echoRequest(attacker.att.mac, stolen), 5);
    await raw(neighbourAdvert(attacker.att.mac, own, stolen), 5);
    const c1 = await spoofed(attacker);
    expect(c1 - c0).toBe(10);
    await raw(neighbourAdvert(attacker.att.mac, own, own), 5);
    await raw(echoRequest(attacker.att.mac, own), 5);
    expect(await spoofed(attacker)).toBe(c1);
    // The victim's MAC as source with everything else honest is dropped at the first rule.
    await raw(echoRequest(victim.att.mac, stolen), 3);
    expect(await spoofed(attacker)).toBe(c1 + 3);
  });

  test("IPv4: ARP replies and an address claiming the victim's IPv4 change nothing; its MAC neither", async () => {
    const { victim, attacker } = guests;
    const c0 = await spoofed(attacker);
    await run("ip", ["-n", attacker.ns, "addr", "add", `${victim.att.ip}/32`, "dev", "eth0"]);
    // Unsolicited ARP replies: "the victim's address is at my MAC".
    await inNs(attacker.ns, "busybox", "arping", "-A", "-c", "3", "-w", "2", "-s", victim.att.ip, "-I", "eth0", bridgeIp).catch(() => undefined);
    const v0 = await echoes(victim.att.ip);
    await ping(attacker.ns, "-c", "3", "-I", victim.att.ip, bridgeIp);
    expect(await echoes(victim.att.ip)).toBe(v0);
    const c1 = await spoofed(attacker);
    expect(c1 - c0).toBeGreaterThanOrEqual(6);
    // dnsmasq rewrites the entry (same MAC) when it answers a DHCP request (previous test), so the state may no longer
    // be PERMANENT; what matters is that it still names the victim's MAC.
    expect(await neighbour(victim.att.ip)).toMatch(new RegExp(`^${victim.att.ip} lladdr ${victim.att.mac} (PERMANENT|REACHABLE|STALE|DELAY)$`));
    expect(await readForward(victim.att.ssh.port)).toBe(victim.att.instanceId);
    await run("ip", ["-n", attacker.ns, "addr", "del", `${victim.att.ip}/32`, "dev", "eth0"]);
    // A DHCP request for the victim's hardware address would make dnsmasq answer with (and write an ARP entry for)
    // the victim's lease: dropped at the tap.
    const c2 = await spoofed(attacker);
    await inNs(attacker.ns, "python3", RAW, "eth0", "4", dhcpDiscover(attacker.att.mac, victim.att.mac));
    expect(await spoofed(attacker)).toBe(c2 + 4);
    await inNs(attacker.ns, "python3", RAW, "eth0", "2", dhcpDiscover(attacker.att.mac, attacker.att.mac));
    expect(await spoofed(attacker)).toBe(c2 + 4);

    // The victim's MAC on the attacker's NIC: nothing it sends gets past its tap, the FDB still points to the victim.
    await run("ip", ["-n", attacker.ns, "link", "set", "eth0", "address", victim.att.mac]);
    try {
      const a0 = await echoes(attacker.att.ip);
      await ping(attacker.ns, "-c", "3", bridgeIp);
      expect(await echoes(attacker.att.ip)).toBe(a0);
      expect(await spoofed(attacker)).toBeGreaterThanOrEqual(c2 + 4 + 3);
      expect(await readForward(victim.att.ssh.port)).toBe(victim.att.instanceId);
      const fdb = (await run("bridge", ["-n", opts.netns, "fdb", "show", "br", opts.bridge])).stdout;
      expect(fdb).toMatch(new RegExp(`${victim.att.mac} dev tap2 master ${opts.bridge} static`));
      expect(fdb).not.toMatch(new RegExp(`${victim.att.mac} dev tap3`));
    } finally {
      await run("ip", ["-n", attacker.ns, "link", "set", "eth0", "address", attacker.att.mac]);
    }
    // Honest again, the attacker works as before: the guard pins, it does not punish.
    const a1 = await echoes(attacker.att.ip);
    await ping(attacker.ns, "-c", "1", bridgeIp);
    expect(await echoes(attacker.att.ip)).toBe(a1 + 1);
    expect(await spoofed(victim)).toBe(0);
  });

  test("detach removes the tap's guard chain, counter and neighbour entry", async () => {
    await network.detach(guests.attacker.att.instanceId);
    const table = (await inNs(opts.netns, "nft", "list", "table", "netdev", "cvm_guard")).stdout;
    expect(table).not.toContain("tap3");
    expect(table).toContain("guard_tap2");
    expect(await neighbour(guests.attacker.att.ip)).toBe("");
  });
});
