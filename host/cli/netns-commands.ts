import { mkdirSync } from "node:fs";
import type { Config } from "../config.js";
import { Netns } from "../net/netns.js";
import { dnsmasqDataDir, isDnsmasq, NetnsOwnedError, NetnsOwnership, nsProcesses } from "../net/netns-owner.js";
import { acquireDataDirLock, DataDirBusyError, lockHolder } from "../ops/daemon-lock.js";

export const NETNS_USAGE = `  netns                           who owns the guest network namespace (CVM_NETNS) and what runs in it
  netns takeover                  hand CVM_NETNS over to this data dir (its previous owner's cvmd and guests
                                  must be stopped); cvmd rebuilds the guest network when it starts`;

interface Io {
  out(line: string): void;
  err(line: string): void;
}

/** `cvmctl netns [takeover]`; undefined when the command is another one. */
export async function runNetnsCommand(positionals: string[], config: Config, io: Io): Promise<number | undefined> {
  const [cmd, sub] = positionals;
  if (cmd !== "netns") return undefined;
  const ownership = new NetnsOwnership(new Netns(config.vm.netns), config.dataDir, lockHolder);
  if (sub === undefined) return status(ownership, io);
  if (sub !== "takeover" || positionals.length > 2) {
    io.err("cvmctl: usage: cvmctl netns [takeover]");
    return 2;
  }
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  let lock: { release(): void };
  try {
    // Held throughout, so this data dir's cvmd cannot start on the namespace half-way through the hand-over.
    lock = acquireDataDirLock(config.dataDir, "cvmctl netns takeover");
  } catch (err) {
    if (!(err instanceof DataDirBusyError)) throw err;
    io.err(`cvmctl: ${err.message}: a running cvmd already owns its namespace, there is nothing to take over`);
    return 1;
  }
  try {
    const r = await ownership.takeOver();
    const ns = config.vm.netns;
    if (r.outcome === "created") io.out(`network namespace ${ns} did not exist: created it, marked for ${config.dataDir}`);
    else if (r.outcome === "already-ours") io.out(`network namespace ${ns} already belongs to ${config.dataDir}`);
    else {
      const from = r.previous ? `data dir ${r.previous.dataDir}${r.previous.complete ? "" : "…"}` : "no marked owner";
      io.out(`network namespace ${ns} taken over from ${from}: stopped ${r.stoppedDnsmasq.length} dnsmasq, made the namespace anew and marked it for ${config.dataDir}`);
      io.out(`cvmd builds bridge, taps and DHCP in it when it starts with CVM_DATA_DIR=${config.dataDir}`);
    }
    return 0;
  } catch (err) {
    if (err instanceof NetnsOwnedError) {
      io.err(`cvmctl: ${err.message}`);
      return 1;
    }
    throw err;
  } finally {
    lock.release();
  }
}

async function status(ownership: NetnsOwnership, io: Io): Promise<number> {
  const ns = ownership.ns;
  if (!(await ns.exists())) {
    io.out(`network namespace ${ns.name} does not exist; the next cvmd to start creates it`);
    return 0;
  }
  const mark = await ownership.owner();
  if (!mark) io.out(`network namespace ${ns.name} carries no owner mark`);
  else {
    const holder = mark.complete ? lockHolder(mark.dataDir) : null;
    const state = !mark.complete ? "path cut to fit the mark" : holder ? `${holder.role} running, pid ${holder.pid}` : "cvmd not running";
    io.out(`network namespace ${ns.name} belongs to data dir ${mark.dataDir}${mark.complete ? "" : "…"} (${state})${mark.complete && mark.dataDir === ownership.dataDir ? ", this one" : ""}`);
  }
  for (const p of await nsProcesses(ns)) {
    const dir = isDnsmasq(p) ? dnsmasqDataDir(p) : null;
    io.out(`  pid ${p.pid}: ${p.argv[0]}${dir ? ` (DHCP of ${dir})` : ""}`);
  }
  return 0;
}
