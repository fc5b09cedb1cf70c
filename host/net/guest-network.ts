import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";

import { run, RunError } from "../../shared/util/run.js";
import { DnsmasqDhcpServer } from "./dhcp-server.js";
import {
  compileGuestNetworkConfig,
  guestIp,
  guestMac,
  guestTap,
  intToIp,
  lowestFree,
  type GuestNetworkConfig,
  type GuestNetworkOptions,
} from "./guest-network-config.js";
import { Netns } from "./netns.js";
import { isDnsmasq, nsProcesses, NetnsOwnership, terminate, type NsProcess, type OwnerLiveness } from "./netns-owner.js";
import { applyNft, deleteNftTable, renderGuestFilter, renderHostNat } from "./port-forward.js";
import { renderTapGuard, renderTapUnguard, spoofCounter, TAP_GUARD_TABLE } from "./tap-guard.js";

export interface GuestAttachment {
  instanceId: string;
  index: number;
  tap: string;
  mac: string;
  ip: string;
  /** Namespace the tap lives in; QEMU must be started inside it. */
  netns: string;
  ssh: { host: string; port: number };
}

export interface GuestNetwork {
  /** Creates (or repairs) namespace, veth, bridge, filters, DHCP and forwards. Idempotent. */
  ensure(): Promise<void>;
  /** Gives an instance a tap, fixed address, DHCP entry and SSH forward. Idempotent: the same instance gets the same answer. */
  attach(a: { instanceId: string; index?: number }): Promise<GuestAttachment>;
  /** Removes tap, DHCP entry and forward. Idempotent. */
  detach(instanceId: string): Promise<void>;
  list(): Promise<Array<GuestAttachment & { tapPresent: boolean }>>;
  /** Removes everything, namespace included. */
  destroy(): Promise<void>;
}

export interface GuestNetworkDeps {
  /** cvmd's logger (pino) or anything with the same two calls. */
  logger?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  /** Whether another data dir's cvmd runs, for the refusal to say so (default: not known). */
  ownerLiveness?: OwnerLiveness;
}

interface State {
  version: 1;
  attachments: Record<string, { index: number; port: number }>;
}

/**
 * Guest networking in a network namespace cvmd owns: a bridge with one isolated tap per guest, dnsmasq for DHCP, a
 * veth pair to the host namespace and nft DNAT forwards for SSH. Allocation state is a small JSON file; everything in
 * the kernel is re-derived from it by `ensure()`/`attach()`, so a restart or a half-finished call converges.
 */
export class NetnsGuestNetwork implements GuestNetwork {
  readonly cfg: GuestNetworkConfig;
  readonly netns: Netns;
  readonly dhcp: DnsmasqDhcpServer;
  readonly ownership: NetnsOwnership;
  private readonly stateFile: string;
  private readonly log: GuestNetworkDeps["logger"];
  private chain: Promise<unknown> = Promise.resolve();
  private ensured = false;

  constructor(opts: GuestNetworkOptions, deps: GuestNetworkDeps = {}) {
    this.cfg = compileGuestNetworkConfig(opts);
    this.netns = new Netns(this.cfg.netns, this.cfg.ipBinary);
    this.ownership = new NetnsOwnership(this.netns, this.cfg.owner, deps.ownerLiveness);
    this.log = deps.logger;
    this.stateFile = path.join(this.cfg.stateDir, "guest-network.json");
    const mask = intToIp(2 ** 32 - this.cfg.poolCidr.size);
    this.dhcp = new DnsmasqDhcpServer({
      netns: this.netns,
      dir: path.join(this.cfg.stateDir, "dhcp"),
      iface: this.cfg.bridge,
      network: intToIp(this.cfg.poolCidr.network),
      netmask: mask,
      // Always a default route to the bridge, NAT or not: forwarded SSH arrives from the veth's host address, outside
      // the guest's subnet, and the guest must be able to answer it. Without NAT the namespace itself has no route
      // out and its filter drops everything but those answers, so the route leads nowhere else.
      router: this.cfg.bridgeIp,
      dns: this.cfg.nat ? this.cfg.dns : [],
      binary: this.cfg.dnsmasqBinary,
    });
  }

  ensure(): Promise<void> {
    return this.serial(() => this.doEnsure());
  }

  attach(a: { instanceId: string; index?: number }): Promise<GuestAttachment> {
    return this.serial(async () => {
      if (!this.ensured) await this.doEnsure();
      const st = await this.readState();
      let entry = st.attachments[a.instanceId];
      if (entry && a.index !== undefined && entry.index !== a.index) {
        throw new Error(`instance ${a.instanceId} is attached with index ${entry.index}, not ${a.index}`);
      }
      if (!entry) {
        const entries = Object.values(st.attachments);
        const index = a.index ?? lowestFree(entries.map((e) => e.index), this.cfg.firstIndex, this.cfg.lastIndex);
        if (index === null) throw new Error(`guest pool ${this.cfg.pool} is exhausted`);
        guestIp(this.cfg, index); // range check
        const owner = Object.entries(st.attachments).find(([, e]) => e.index === index);
        if (owner) throw new Error(`guest index ${index} is taken by ${owner[0]}`);
        const port = lowestFree(entries.map((e) => e.port), this.cfg.sshPorts.from, this.cfg.sshPorts.to);
        if (port === null) throw new Error(`SSH port pool ${this.cfg.sshPorts.from}-${this.cfg.sshPorts.to} is exhausted`);
        entry = { index, port };
        st.attachments[a.instanceId] = entry;
        // Persist the allocation before touching the kernel, so a crash in between cannot hand it out twice.
        await this.writeState(st);
      }
      await this.ensureTap(entry.index);
      await this.syncDhcp(st);
      await this.syncForwards(st);
      return this.describe(a.instanceId, entry);
    });
  }

  detach(instanceId: string): Promise<void> {
    return this.serial(async () => {
      const st = await this.readState();
      const entry = st.attachments[instanceId];
      if (!entry) return;
      await this.removeTap(entry.index);
      delete st.attachments[instanceId];
      await this.writeState(st);
      if (await this.netns.exists()) {
        await this.syncDhcp(st);
      }
      await this.syncForwards(st);
    });
  }

  list(): Promise<Array<GuestAttachment & { tapPresent: boolean }>> {
    return this.serial(async () => {
      const st = await this.readState();
      const taps = await this.taps();
      return Object.entries(st.attachments)
        .sort((a, b) => a[1].index - b[1].index)
        .map(([id, e]) => ({ ...this.describe(id, e), tapPresent: taps.has(guestTap(e.index)) }));
    });
  }

  destroy(): Promise<void> {
    return this.serial(async () => {
      await this.dhcp.stop();
      await deleteNftTable(this.cfg.nftBinary, "ip", this.cfg.hostTable);
      await run(this.cfg.ipBinary, ["link", "del", this.cfg.hostVeth], { timeoutMs: 10_000 }).catch(ignoreMissing);
      await this.netns.delete();
      await rm(this.stateFile, { force: true });
      await rm(path.join(this.cfg.stateDir, "dhcp"), { recursive: true, force: true });
      this.ensured = false;
    });
  }

  private describe(instanceId: string, e: { index: number; port: number }): GuestAttachment {
    const ip = guestIp(this.cfg, e.index);
    return {
      instanceId,
      index: e.index,
      tap: guestTap(e.index),
      mac: guestMac(ip),
      ip,
      netns: this.cfg.netns,
      ssh: { host: this.cfg.sshListen, port: e.port },
    };
  }

  private async doEnsure(): Promise<void> {
    const c = this.cfg;
    const ns = this.netns;
    await mkdir(c.stateDir, { recursive: true, mode: 0o711 });
    // Before anything is built in the namespace or on the host side of it: another data dir's namespace is refused,
    // not shared (two dnsmasq on one bridge leave guests without the address their ARP entry promises).
    const claimed = await this.ownership.claim((p) => this.isOurs(p));
    if (claimed !== "adopted") this.log?.info({ netns: c.netns, owner: c.owner, how: claimed }, "guest network namespace claimed for this data dir");
    await this.stopStrayDnsmasq();
    await ns.ip(["link", "set", "lo", "up"]);

    if (!(await linkExists(() => run(c.ipBinary, ["link", "show", c.hostVeth], { timeoutMs: 10_000 })))) {
      // A stale peer left in the namespace would block re-creating the pair.
      await ns.ip(["link", "del", c.nsVeth]).catch(ignoreMissing);
      await run(c.ipBinary, ["link", "add", c.hostVeth, "type", "veth", "peer", "name", c.nsVeth, "netns", c.netns], { timeoutMs: 10_000 });
    }
    await run(c.ipBinary, ["addr", "replace", `${c.hostLinkIp}/31`, "dev", c.hostVeth], { timeoutMs: 10_000 });
    await run(c.ipBinary, ["link", "set", c.hostVeth, "up"], { timeoutMs: 10_000 });
    await ns.ip(["addr", "replace", `${c.nsLinkIp}/31`, "dev", c.nsVeth]);
    await ns.ip(["link", "set", c.nsVeth, "up"]);
    await run(c.ipBinary, ["route", "replace", c.pool, "via", c.nsLinkIp, "dev", c.hostVeth], { timeoutMs: 10_000 });
    // Locally originated connections to 127.0.0.1:<port> are DNATed out of this veth; the kernel drops 127/8
    // sources and destinations on non-loopback devices unless route_localnet is set on them.
    await this.sysctl(null, `net.ipv4.conf.${c.hostVeth}.route_localnet`, "1");

    if (!(await linkExists(() => ns.ip(["link", "show", c.bridge])))) {
      await ns.ip(["link", "add", c.bridge, "type", "bridge"]);
    }
    // A bridge without an address of its own takes its lowest port's, and every change of it flushes the namespace's
    // neighbour table, permanent entries included: pin it, so attaching a guest never unpins the others.
    await ns.ip(["link", "set", c.bridge, "address", guestMac(c.bridgeIp)]);
    await ns.ip(["addr", "replace", `${c.bridgeIp}/${c.poolCidr.prefix}`, "dev", c.bridge]);
    await ns.ip(["link", "set", c.bridge, "up"]);
    // The namespace routes between veth and bridge (forwarded SSH); its filter decides what may cross.
    await this.sysctl(ns, "net.ipv4.ip_forward", "1");
    if (c.nat) {
      await ns.ip(["route", "replace", "default", "via", c.hostLinkIp, "dev", c.nsVeth]);
      await this.sysctl(null, "net.ipv4.ip_forward", "1");
    } else {
      await ns.ip(["route", "del", "default"]).catch(ignoreMissing);
    }
    await this.nftInNs(renderGuestFilter(c, c.nat ? [...c.blockedDestinations, ...(await this.hostAddresses())] : []));

    const st = await this.readState();
    for (const e of Object.values(st.attachments)) await this.ensureTap(e.index);
    await this.syncForwards(st);
    await this.dhcp.writeHosts(this.dhcpHosts(st));
    await this.dhcp.ensure({ reload: true });
    this.ensured = true;
  }

  /** A process our own data dir started: our dnsmasq, or anything whose command line points into the data dir (QEMU). */
  private isOurs(p: NsProcess): boolean {
    if (isDnsmasq(p)) return p.argv.includes(`--pid-file=${this.dhcp.pidFile}`);
    return p.argv.some((a) => a.includes(this.cfg.owner + "/"));
  }

  /** In our namespace the one dnsmasq is the one our pid file names; any other answers DHCP with a list not ours. */
  private async stopStrayDnsmasq(): Promise<void> {
    const mine = await this.dhcp.pid();
    const strays = (await nsProcesses(this.netns)).filter((p) => isDnsmasq(p) && p.pid !== mine);
    if (strays.length === 0) return;
    for (const p of strays) await terminate(p.pid);
    this.log?.warn(
      { netns: this.cfg.netns, pids: strays.map((p) => p.pid), pid_files: strays.map((p) => p.argv.find((a) => a.startsWith("--pid-file="))?.slice(11) ?? null), kept: mine },
      `stopped ${strays.length} stray dnsmasq in the guest namespace (not the one ${this.dhcp.pidFile} names)`,
    );
  }

  private async ensureTap(index: number): Promise<void> {
    const tap = guestTap(index);
    const ip = guestIp(this.cfg, index);
    const mac = guestMac(ip);
    const ns = this.netns;
    if (!(await linkExists(() => ns.ip(["link", "show", tap])))) {
      // Persistent tap: it survives QEMU restarts, and QEMU (run inside the namespace) attaches to it by name.
      await ns.ip(["tuntap", "add", "dev", tap, "mode", "tap"]);
    }
    // The guard is on the tap before it can carry a frame: only the guest's own MAC and addresses get past it.
    await this.nftInNs(renderTapGuard({ tap, mac, ipv4: ip }));
    await ns.ip(["link", "set", tap, "master", this.cfg.bridge]);
    // Isolated ports talk only to non-isolated ones (the bridge itself), never to each other: no tenant-to-tenant L2.
    // No learning: the bridge's idea of where a MAC lives comes from the static entry below, never from a guest's frames.
    await ns.ip(["link", "set", "dev", tap, "type", "bridge_slave", "isolated", "on", "learning", "off"]);
    await ns.exec(this.cfg.bridgeBinary, ["fdb", "replace", mac, "dev", tap, "master", "static"]);
    // A permanent entry is never replaced by ARP, whatever a guest answers: forwarded SSH always goes to this MAC.
    await ns.ip(["neigh", "replace", ip, "lladdr", mac, "dev", this.cfg.bridge, "nud", "permanent"]);
    await ns.ip(["link", "set", tap, "up"]);
  }

  private async removeTap(index: number): Promise<void> {
    if (!(await this.netns.exists())) return;
    const tap = guestTap(index);
    await this.netns.ip(["link", "del", tap]).catch(ignoreMissing);
    await this.netns.ip(["neigh", "del", guestIp(this.cfg, index), "dev", this.cfg.bridge]).catch((e: unknown) => {
      if (!(e instanceof RunError && /No such file or directory/.test(e.stderr))) ignoreMissing(e);
    });
    await this.nftInNs(renderTapUnguard(tap));
  }

  /** Frames each attached tap's guard dropped as spoofed, by instance id. */
  spoofCounters(): Promise<Map<string, { packets: number; bytes: number }>> {
    return this.serial(async () => {
      const out = new Map<string, { packets: number; bytes: number }>();
      const st = await this.readState();
      if (!(await this.netns.exists())) return out;
      const { stdout } = await this.netns.exec(this.cfg.nftBinary, ["-j", "list", "counters", "table", "netdev", TAP_GUARD_TABLE]).catch(() => ({ stdout: "{}" }));
      const byName = new Map<string, { packets: number; bytes: number }>();
      for (const o of (JSON.parse(stdout || "{}") as { nftables?: Array<{ counter?: { name: string; packets: number; bytes: number } }> }).nftables ?? []) {
        if (o.counter) byName.set(o.counter.name, { packets: o.counter.packets, bytes: o.counter.bytes });
      }
      for (const [id, e] of Object.entries(st.attachments)) {
        const c = byName.get(spoofCounter(guestTap(e.index)));
        if (c) out.set(id, c);
      }
      return out;
    });
  }

  private nftInNs(script: string): Promise<void> {
    return applyNft(this.cfg.nftBinary, script, (cmd, args, input) => this.netns.exec(cmd, args, { input }));
  }

  private async taps(): Promise<Set<string>> {
    if (!(await this.netns.exists())) return new Set();
    const { stdout } = await this.netns.ip(["-j", "link", "show", "type", "tun"]).catch(() => ({ stdout: "[]" }));
    const links = JSON.parse(stdout || "[]") as Array<{ ifname: string }>;
    return new Set(links.map((l) => l.ifname));
  }

  private dhcpHosts(st: State) {
    return Object.values(st.attachments).map((e) => {
      const ip = guestIp(this.cfg, e.index);
      return { mac: guestMac(ip), ip };
    });
  }

  private async syncDhcp(st: State): Promise<void> {
    const changed = await this.dhcp.writeHosts(this.dhcpHosts(st));
    await this.dhcp.ensure({ reload: changed });
  }

  private async syncForwards(st: State): Promise<void> {
    const fwd = Object.entries(st.attachments).map(([instanceId, e]) => ({ instanceId, port: e.port, ip: guestIp(this.cfg, e.index) }));
    await applyNft(this.cfg.nftBinary, renderHostNat(this.cfg, fwd));
  }

  /** The host's own IPv4 addresses (every interface of the host namespace): a guest never reaches them through NAT. */
  private async hostAddresses(): Promise<string[]> {
    const { stdout } = await run(this.cfg.ipBinary, ["-j", "-4", "addr", "show"], { timeoutMs: 10_000 });
    const links = JSON.parse(stdout || "[]") as Array<{ addr_info?: Array<{ local?: string }> }>;
    return [...new Set(links.flatMap((l) => (l.addr_info ?? []).map((a) => a.local).filter((a): a is string => !!a)))].sort();
  }

  private async sysctl(ns: Netns | null, key: string, value: string): Promise<void> {
    const args = ["-q", "-w", `${key}=${value}`];
    if (ns) await ns.exec(this.cfg.sysctlBinary, args);
    else await run(this.cfg.sysctlBinary, args, { timeoutMs: 10_000 });
  }

  private async readState(): Promise<State> {
    try {
      const st = JSON.parse(await readFile(this.stateFile, "utf8")) as State;
      if (st.version !== 1 || typeof st.attachments !== "object") throw new Error(`${this.stateFile}: unknown format`);
      return st;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, attachments: {} };
      throw e;
    }
  }

  private async writeState(st: State): Promise<void> {
    await mkdir(this.cfg.stateDir, { recursive: true, mode: 0o711 });
    const tmp = `${this.stateFile}.tmp`;
    await writeFile(tmp, JSON.stringify(st, null, 2) + "\n", { mode: 0o600 });
    await rename(tmp, this.stateFile);
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }
}

async function linkExists(show: () => Promise<unknown>): Promise<boolean> {
  try {
    await show();
    return true;
  } catch (e) {
    if (e instanceof RunError && /does not exist|Cannot find device/.test(e.stderr)) return false;
    throw e;
  }
}

function ignoreMissing(e: unknown): void {
  if (e instanceof RunError && /does not exist|Cannot find device|No such process|Cannot find/i.test(e.stderr)) return;
  throw e;
}
