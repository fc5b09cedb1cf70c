import { createHash } from "node:crypto";
import { realpath } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import path from "node:path";

import { RunError } from "../../shared/util/run.js";
import { isAlive, readCmdline, signal, waitForExit } from "../proc.js";
import type { Netns } from "./netns.js";

/**
 * Which data dir's cvmd owns a guest namespace. The mark is the alias of the namespace's loopback device: `lo` exists
 * exactly as long as the namespace does, so the mark is there before anything else is built in it and goes when the
 * namespace goes, with nothing on disk to disagree with the kernel.
 */
const MARK = "cvmd-owner:";
/** A data dir too long for the alias is marked by a hash (which decides) and as much of its path as fits (to show). */
const HASHED_MARK = /^cvmd-owner#([0-9a-f]{16}):(.*)$/s;
/** IFALIASZ is 256 bytes with the terminating NUL; the kernel refuses a longer alias. */
const ALIAS_MAX_BYTES = 255;

export interface OwnerMark {
  /** The owner's data dir, or only its beginning when `complete` is false. */
  dataDir: string;
  complete: boolean;
}

export function ownerMark(dataDir: string): string {
  const full = MARK + dataDir;
  if (Buffer.byteLength(full) <= ALIAS_MAX_BYTES) return full;
  const head = `cvmd-owner#${createHash("sha256").update(dataDir).digest("hex").slice(0, 16)}:`;
  return head + utf8Prefix(dataDir, ALIAS_MAX_BYTES - Buffer.byteLength(head));
}

/** The owner a mark names; null for no alias or one cvmd did not write. */
export function parseOwnerMark(alias: string | null | undefined): OwnerMark | null {
  if (!alias) return null;
  if (alias.startsWith(MARK)) return { dataDir: alias.slice(MARK.length), complete: true };
  const m = HASHED_MARK.exec(alias);
  return m ? { dataDir: m[2], complete: false } : null;
}

function showOwner(m: OwnerMark): string {
  return m.complete ? m.dataDir : `${m.dataDir}… (cut to fit the mark)`;
}

function utf8Prefix(s: string, maxBytes: number): string {
  let out = "";
  for (const ch of s) {
    if (Buffer.byteLength(out + ch) > maxBytes) break;
    out += ch;
  }
  return out;
}

export interface NsProcess {
  pid: number;
  argv: string[];
}

export function isDnsmasq(p: NsProcess): boolean {
  return path.basename(p.argv[0] ?? "") === "dnsmasq";
}

/** The data dir a cvmd's dnsmasq serves, read from its pid file (`<data dir>/net/dhcp/dnsmasq.pid`); null otherwise. */
export function dnsmasqDataDir(p: NsProcess): string | null {
  const pidFile = p.argv.find((a) => a.startsWith("--pid-file="))?.slice("--pid-file=".length);
  const suffix = "/net/dhcp/dnsmasq.pid";
  return pidFile?.endsWith(suffix) ? pidFile.slice(0, -suffix.length) : null;
}

/** Live processes in the namespace with their command lines (kernel threads and zombies left out). */
export async function nsProcesses(ns: Netns): Promise<NsProcess[]> {
  const out: NsProcess[] = [];
  for (const pid of await ns.pids()) {
    const argv = await readCmdline(pid);
    if (argv && (await isAlive(pid))) out.push({ pid, argv });
  }
  return out;
}

function showProcesses(ps: readonly NsProcess[]): string {
  const shown = ps.slice(0, 4).map((p) => {
    const dir = isDnsmasq(p) ? dnsmasqDataDir(p) : null;
    return `pid ${p.pid} ${path.basename(p.argv[0] ?? "?")}${dir ? ` of ${dir}` : ""}`;
  });
  return shown.join(", ") + (ps.length > 4 ? ` and ${ps.length - 4} more` : "");
}

/** SIGTERM, then SIGKILL if it is still there after 2 s. */
export async function terminate(pid: number): Promise<void> {
  if (!signal(pid, "SIGTERM")) return;
  if (await waitForExit(pid, 2_000)) return;
  signal(pid, "SIGKILL");
  await waitForExit(pid, 2_000);
}

/** Who holds a data dir right now (its cvmd, or cvmctl for a moment); null when nobody does. */
export type OwnerLiveness = (dataDir: string) => { pid: number; role: string } | null;

/** A namespace this data dir may not use: the message is the one line the operator sees. */
export class NetnsOwnedError extends Error {
  override name = "NetnsOwnedError";
  /** EX_CONFIG: only the operator can mend it, so the unit does not restart on it. */
  readonly exitCode = 78;
}

export interface TakeoverReport {
  /** Whom the namespace belonged to: null when it was unmarked or did not exist. */
  previous: OwnerMark | null;
  outcome: "created" | "already-ours" | "taken-over";
  stoppedDnsmasq: number[];
}

/**
 * Claims, checks and hands over one namespace for one data dir. Every decision runs under a host-wide lock per
 * namespace name, so two cvmds starting at once cannot both find it unmarked and both mark it.
 */
export class NetnsOwnership {
  constructor(
    readonly ns: Netns,
    /** This cvmd's data dir (absolute). */
    readonly dataDir: string,
    /** Without it, nobody is taken for running: the refusal does not say, and a takeover does not check. */
    private readonly liveness?: OwnerLiveness,
  ) {}

  /** The mark on the namespace; null when it is unmarked or absent. */
  async owner(): Promise<OwnerMark | null> {
    return (await this.ns.exists()) ? parseOwnerMark(await this.alias()) : null;
  }

  /**
   * Before cvmd touches anything in the namespace: create and mark it, or adopt it when the mark is ours. Another
   * data dir's mark is refused. An unmarked namespace (made by a cvmd from before marks) is marked ours only when
   * every process in it is ours (`isOurs`): then it can only be what our own older cvmd left.
   */
  claim(isOurs: (p: NsProcess) => boolean): Promise<"created" | "adopted" | "marked"> {
    return this.locked(async (mine) => {
      if (!(await this.ns.exists())) {
        await this.ns.create();
        await this.setMark(mine.mark);
        return "created";
      }
      const alias = await this.alias();
      if (mine.accepts.includes(alias ?? "")) return "adopted";
      const mark = parseOwnerMark(alias);
      if (mark) throw new NetnsOwnedError(this.ownedMessage(mark));
      const foreign = (await nsProcesses(this.ns)).filter((p) => !isOurs(p));
      if (foreign.length > 0) {
        throw new NetnsOwnedError(
          `network namespace ${this.ns.name} (CVM_NETNS) carries no owner mark (an older cvmd or someone by hand made it) and processes that are not this data dir's run in it (${showProcesses(foreign)}): ` +
            `set CVM_NETNS to another name, or run \`cvmctl netns takeover\` with CVM_DATA_DIR=${this.dataDir} to take it over`,
        );
      }
      await this.setMark(mine.mark);
      return "marked";
    });
  }

  /**
   * The operator's explicit hand-over to this data dir. Refused while the previous owner's cvmd holds its data dir, or
   * while anything but dnsmasq runs in the namespace (the previous owner's guests: stopping tenants' VMs is not ours
   * to do here). Otherwise every dnsmasq in it is stopped and the namespace is deleted and made anew, marked ours:
   * taps, neighbours, FDB entries, filters and the veth pair all go with the old one, and cvmd builds the rest at start.
   */
  takeOver(): Promise<TakeoverReport> {
    return this.locked(async (mine) => {
      if (!(await this.ns.exists())) {
        await this.ns.create();
        await this.setMark(mine.mark);
        return { previous: null, outcome: "created", stoppedDnsmasq: [] };
      }
      const alias = await this.alias();
      const previous = parseOwnerMark(alias);
      if (mine.accepts.includes(alias ?? "")) return { previous, outcome: "already-ours", stoppedDnsmasq: [] };
      const procs = await nsProcesses(this.ns);
      // The mark names the owner; in an unmarked namespace the dnsmasq pid files tell whose it may be.
      const owners = new Set<string>(procs.filter(isDnsmasq).flatMap((p) => dnsmasqDataDir(p) ?? []));
      if (previous?.complete) owners.add(previous.dataDir);
      // Our own data dir is held by whoever asked for the takeover.
      for (const ours of mine.dirs) owners.delete(ours);
      for (const dir of owners) {
        const holder = this.liveness?.(dir);
        if (holder) {
          throw new NetnsOwnedError(`network namespace ${this.ns.name} is in use by ${holder.role} (pid ${holder.pid}) of data dir ${dir}: stop it first, then run the takeover again`);
        }
      }
      const guests = procs.filter((p) => !isDnsmasq(p));
      if (guests.length > 0) {
        throw new NetnsOwnedError(
          `network namespace ${this.ns.name} still runs ${guests.length} process(es) besides dnsmasq (${showProcesses(guests)}), the previous owner's guests: ` +
            `delete its instances (or stop those processes), then run the takeover again`,
        );
      }
      const stopped: number[] = [];
      for (const p of procs) {
        await terminate(p.pid);
        stopped.push(p.pid);
      }
      // Deleting a veth end deletes its peer at once; left to the namespace's (asynchronous) teardown, the host end
      // could still be there when cvmd checks for it, and cvmd would keep a pair that is about to vanish.
      const { stdout } = await this.ns.ip(["-j", "link", "show", "type", "veth"]);
      for (const l of JSON.parse(stdout || "[]") as Array<{ ifname: string }>) await this.ns.ip(["link", "del", l.ifname]).catch(ignoreGone);
      await this.ns.delete();
      await this.ns.create();
      await this.setMark(mine.mark);
      return { previous, outcome: "taken-over", stoppedDnsmasq: stopped };
    });
  }

  private ownedMessage(mark: OwnerMark): string {
    const holder = mark.complete && this.liveness ? this.liveness(mark.dataDir) : null;
    const state = !mark.complete || !this.liveness ? "" : holder ? `, whose ${holder.role} is running (pid ${holder.pid})` : ", whose cvmd is not running";
    const how = holder ? "or stop that cvmd and then run" : "or run";
    return (
      `network namespace ${this.ns.name} (CVM_NETNS) belongs to data dir ${showOwner(mark)}${state}, not to ${this.dataDir}: ` +
      `set CVM_NETNS to another name, ${how} \`cvmctl netns takeover\` with CVM_DATA_DIR=${this.dataDir} to take it over`
    );
  }

  private async alias(): Promise<string | null> {
    const { stdout } = await this.ns.ip(["-j", "link", "show", "dev", "lo"]);
    return (JSON.parse(stdout || "[]") as Array<{ ifalias?: string }>)[0]?.ifalias ?? null;
  }

  private async setMark(mark: string): Promise<void> {
    await this.ns.ip(["link", "set", "dev", "lo", "alias", mark]);
  }

  /**
   * Runs `fn` holding the namespace's claim lock: an abstract Unix socket, which one process at a time can bind and
   * the kernel frees when that process dies, so a crashed claimer never leaves the lock behind.
   */
  private async locked<T>(fn: (mine: { mark: string; accepts: string[]; dirs: string[] }) => Promise<T>): Promise<T> {
    // A data dir reached through a symlink is still the same data dir: the mark names the real path.
    const real = await realpath(this.dataDir).catch(() => this.dataDir);
    const mine = { mark: ownerMark(real), accepts: [ownerMark(real), ownerMark(this.dataDir)], dirs: [real, this.dataDir] };
    const name = `\0cvmd-netns-claim/${this.ns.name}`;
    const deadline = Date.now() + 30_000;
    let server: Server;
    for (;;) {
      server = createServer();
      const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
        server.once("error", resolve);
        server.listen({ path: name }, () => {
          server.off("error", resolve);
          resolve(null);
        });
      });
      if (!err) break;
      if (err.code !== "EADDRINUSE" || Date.now() > deadline) throw new Error(`cannot take the claim lock of network namespace ${this.ns.name}: ${err.message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    try {
      return await fn(mine);
    } finally {
      await new Promise((r) => server.close(r));
    }
  }
}

function ignoreGone(e: unknown): void {
  if (e instanceof RunError && /does not exist|Cannot find device/.test(e.stderr)) return;
  throw e;
}
