import { mkdirSync } from "node:fs";
import type { Config } from "../config.js";
import { Netns } from "../net/netns.js";
import { dnsmasqDataDir, isDnsmasq, NetnsOwnership, nsProcesses } from "../net/netns-owner.js";
import { acquireDataDirLock, DataDirBusyError, lockHolder } from "../ops/daemon-lock.js";
import { CliError, type CliContext } from "./context.js";

function ownership(config: Config): NetnsOwnership {
  return new NetnsOwnership(new Netns(config.vm.netns), config.dataDir, lockHolder);
}

/** `cvmctl netns takeover` */
export async function netnsTakeover(ctx: CliContext): Promise<number> {
  const config = ctx.config();
  const io = ctx.io;
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  let lock: { release(): void };
  try {
    // Held throughout, so this data dir's cvmd cannot start on the namespace half-way through the hand-over.
    lock = acquireDataDirLock(config.dataDir, "cvmctl netns takeover");
  } catch (err) {
    if (!(err instanceof DataDirBusyError)) throw err;
    throw new CliError(`${err.message}: a running cvmd already owns its namespace, there is nothing to take over`, 1);
  }
  try {
    const r = await ownership(config).takeOver();
    const ns = config.vm.netns;
    if (r.outcome === "created") io.out(`network namespace ${ns} did not exist: created it, marked for ${config.dataDir}`);
    else if (r.outcome === "already-ours") io.out(`network namespace ${ns} already belongs to ${config.dataDir}`);
    else {
      const from = r.previous ? `data dir ${r.previous.dataDir}${r.previous.complete ? "" : "…"}` : "no marked owner";
      io.out(`network namespace ${ns} taken over from ${from}: stopped ${r.stoppedDnsmasq.length} dnsmasq, made the namespace anew and marked it for ${config.dataDir}`);
      io.out(`cvmd builds bridge, taps and DHCP in it when it starts with CVM_DATA_DIR=${config.dataDir}`);
    }
    return 0;
  } finally {
    lock.release();
  }
}

/** `cvmctl netns` */
export async function netnsStatus(ctx: CliContext): Promise<number> {
  const owner = ownership(ctx.config());
  const io = ctx.io;
  const ns = owner.ns;
  if (!(await ns.exists())) {
    io.out(`network namespace ${ns.name} does not exist; the next cvmd to start creates it`);
    return 0;
  }
  const mark = await owner.owner();
  if (!mark) io.out(`network namespace ${ns.name} carries no owner mark`);
  else {
    const holder = mark.complete ? lockHolder(mark.dataDir) : null;
    const state = !mark.complete ? "path cut to fit the mark" : holder ? `${holder.role} running, pid ${holder.pid}` : "cvmd not running";
    io.out(`network namespace ${ns.name} belongs to data dir ${mark.dataDir}${mark.complete ? "" : "…"} (${state})${mark.complete && mark.dataDir === owner.dataDir ? ", this one" : ""}`);
  }
  for (const p of await nsProcesses(ns)) {
    const dir = isDnsmasq(p) ? dnsmasqDataDir(p) : null;
    io.out(`  pid ${p.pid}: ${p.argv[0]}${dir ? ` (DHCP of ${dir})` : ""}`);
  }
  return 0;
}
