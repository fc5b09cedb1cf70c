import { chmod, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import path from "node:path";

import { isAlive, readCmdline } from "../proc.js";
import type { Netns } from "./netns.js";
import { terminate } from "./netns-owner.js";

export interface DhcpHost {
  mac: string;
  ip: string;
}

export interface DnsmasqOptions {
  netns: Netns;
  /** Holds hosts, leases, pid and log; must be traversable by `nobody`, to whom dnsmasq drops and who rereads hosts on SIGHUP. */
  dir: string;
  iface: string;
  /** Network address and netmask of the pool: only MACs listed in the hosts file get an address ("static" range). */
  network: string;
  netmask: string;
  /** Default route handed to guests; null hands out none (guests reach only their own subnet). */
  router: string | null;
  dns: readonly string[];
  leaseTime?: string;
  binary?: string;
}

/** Renders the dhcp-hostsfile: one `mac,ip` per line, sorted so rewrites are stable. */
export function renderDhcpHosts(hosts: readonly DhcpHost[]): string {
  return hosts
    .map((h) => `${h.mac},${h.ip}`)
    .sort()
    .map((l) => l + "\n")
    .join("");
}

/**
 * dnsmasq as a DHCP-only server (`--port=0`: no DNS) inside the guest namespace, handing each known MAC its fixed
 * address. It daemonizes itself, so it outlives cvmd restarts; `ensure()` finds it again by pid file and command line.
 */
export class DnsmasqDhcpServer {
  readonly hostsFile: string;
  readonly pidFile: string;
  readonly leaseFile: string;
  readonly logFile: string;

  constructor(private readonly o: DnsmasqOptions) {
    this.hostsFile = path.join(o.dir, "hosts");
    this.pidFile = path.join(o.dir, "dnsmasq.pid");
    this.leaseFile = path.join(o.dir, "leases");
    this.logFile = path.join(o.dir, "dnsmasq.log");
  }

  args(): string[] {
    const a = [
      "--conf-file=/dev/null",
      "--port=0",
      "--no-resolv",
      "--no-hosts",
      `--interface=${this.o.iface}`,
      "--bind-interfaces",
      `--dhcp-range=${this.o.network},static,${this.o.netmask},${this.o.leaseTime ?? "12h"}`,
      `--dhcp-hostsfile=${this.hostsFile}`,
      `--dhcp-leasefile=${this.leaseFile}`,
      `--pid-file=${this.pidFile}`,
      `--log-facility=${this.logFile}`,
      // Guests can send DHCP requests at will and each one would be a log line: the log keeps start-up and errors only,
      // so its size does not depend on what a guest does.
      "--quiet-dhcp",
      "--dhcp-authoritative",
      // Empty options suppress dnsmasq's default of advertising itself as router and DNS server.
      this.o.router ? `--dhcp-option=option:router,${this.o.router}` : "--dhcp-option=option:router",
      this.o.dns.length ? `--dhcp-option=option:dns-server,${this.o.dns.join(",")}` : "--dhcp-option=option:dns-server",
    ];
    return a;
  }

  /** The pid of our dnsmasq if it runs (pid file names a live dnsmasq started with our pid file). */
  async pid(): Promise<number | null> {
    const n = await readFile(this.pidFile, "utf8").then((s) => Number.parseInt(s.trim(), 10), () => NaN);
    if (!Number.isSafeInteger(n) || n <= 1 || !(await isAlive(n))) return null;
    const argv = await readCmdline(n);
    return argv && path.basename(argv[0]) === "dnsmasq" && argv.includes(`--pid-file=${this.pidFile}`) ? n : null;
  }

  async writeHosts(hosts: readonly DhcpHost[]): Promise<boolean> {
    await this.prepareDir();
    const text = renderDhcpHosts(hosts);
    const old = await readFile(this.hostsFile, "utf8").catch(() => null);
    if (old === text) return false;
    const tmp = `${this.hostsFile}.tmp`;
    await writeFile(tmp, text, { mode: 0o644 });
    await rename(tmp, this.hostsFile);
    return true;
  }

  /** Starts dnsmasq unless it already runs; with `reload`, a running one rereads the hosts file (SIGHUP). */
  async ensure(opts: { reload?: boolean } = {}): Promise<number> {
    await this.prepareDir();
    const running = await this.pid();
    if (running !== null) {
      if (opts.reload) process.kill(running, "SIGHUP");
      return running;
    }
    await this.o.netns.exec(this.o.binary ?? "dnsmasq", this.args(), { timeoutMs: 10_000 });
    for (let i = 0; i < 50; i++) {
      const p = await this.pid();
      if (p !== null) return p;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`dnsmasq in ${this.o.netns.name} did not come up; see ${this.logFile}`);
  }

  async stop(): Promise<void> {
    const p = await this.pid();
    if (p !== null) await terminate(p);
  }

  private async prepareDir(): Promise<void> {
    await mkdir(this.o.dir, { recursive: true, mode: 0o755 });
    const st = await stat(this.o.dir);
    if ((st.mode & 0o005) !== 0o005) await chmod(this.o.dir, (st.mode & 0o7777) | 0o005);
    // dnsmasq reads the hosts file after dropping to `nobody` (at start and on SIGHUP); fail here with the reason
    // rather than leave guests without addresses and the cause in dnsmasq's log.
    for (let d = path.dirname(this.o.dir); ; d = path.dirname(d)) {
      const m = (await stat(d)).mode;
      if ((m & 0o001) === 0) {
        throw new Error(`dnsmasq (running as nobody) cannot reach ${this.hostsFile}: ${d} is not searchable by others (chmod o+x ${d})`);
      }
      if (d === path.dirname(d)) break;
    }
  }
}
