import { isDeepStrictEqual } from "node:util";
import { AGENT_CHANNELS } from "../../shared/protocol/agent-channel.js";
import { VmmError, type LaunchSpec } from "./hypervisor.js";
import type { AgentEndpoint, Profile, ProfileTable } from "./profiles.js";
import { buildQemuArgs } from "./qemu-args.js";
import { runPaths } from "./run-dir.js";

/** QEMU's `key=value,...` syntax (",," is a literal comma); a leading bare word is returned as `_`. */
export function parseQemuOpts(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  s.replaceAll(",,", "\0").split(",").forEach((part, i) => {
    const p = part.replaceAll("\0", ",");
    const eq = p.indexOf("=");
    if (eq >= 0) out[p.slice(0, eq)] = p.slice(eq + 1);
    else if (i === 0) out._ = p;
    else out[p] = "on";
  });
  return out;
}

function values(argv: string[], option: string): string[] {
  return argv.flatMap((a, i) => (a === option && i + 1 < argv.length ? [argv[i + 1]] : []));
}

/**
 * The agent channels a QEMU command line creates, as the host would have to dial them: the Unix
 * socket of a server chardev behind the agent's virtio-serial port, and the CID of a vhost-vsock
 * device (the agent's vsock port is not on the command line; it is the shared table's). Read from
 * the argv itself, so it sees what QEMU will be told, whatever code produced it.
 */
export function agentChannelsInArgv(argv: string[]): AgentEndpoint[] {
  const chardevs = new Map(values(argv, "-chardev").map((c) => [parseQemuOpts(c).id, parseQemuOpts(c)]));
  const found: AgentEndpoint[] = [];
  for (const d of values(argv, "-device").map(parseQemuOpts)) {
    if (d._ === "virtserialport" && d.name === AGENT_CHANNELS.plain.portName) {
      const c = chardevs.get(d.chardev);
      if (!c || c._ !== "socket" || !c.path || c.server !== "on") {
        throw new VmmError("invalid_spec", `the agent's virtio-serial port is not backed by a server socket chardev (${JSON.stringify(c ?? d.chardev)})`);
      }
      found.push({ kind: "unix", path: c.path });
    }
    if (d._ === "vhost-vsock-pci") found.push({ kind: "vsock", cid: Number(d["guest-cid"]), port: AGENT_CHANNELS.tdx.port });
  }
  return found;
}

const PROBE_CID = 4242;

/** A launch that exercises every part of a profile; never run, only turned into argv. */
function probeSpec(p: Profile): LaunchSpec {
  return {
    instanceId: "profile-check",
    profile: p.name,
    accel: "tcg",
    memoryMiB: 512,
    vcpus: 1,
    image: { kernel: "/probe/vmlinuz", initrd: "/probe/initrd", cmdline: "console=ttyS0", disks: [{ id: "root", path: "/probe/root.img" }] },
    cid: PROBE_CID,
    nic: { tap: "probe0", mac: "52:54:00:00:00:01" },
    tdx: p.firmware === "tdvf" ? { firmware: "/probe/tdvf.fd" } : undefined,
  };
}

/**
 * The problems of one profile row: its argv must create exactly the channel its `endpoint` says
 * the driver dials, that channel must be the one the guest reads from AGENT_CHANNELS, the firmware
 * must be on the command line as declared, and a TD must be checked on MRTD and RTMR0–2 at least.
 */
export function profileProblems(p: Profile, table: ProfileTable): string[] {
  const problems: string[] = [];
  if (!isDeepStrictEqual(p.channel, AGENT_CHANNELS[p.name])) {
    problems.push(`its channel ${JSON.stringify(p.channel)} is not the one the guest listens on (${JSON.stringify(AGENT_CHANNELS[p.name])})`);
  }
  const spec = probeSpec(p);
  const paths = runPaths("/probe", spec.instanceId);
  let argv: string[];
  let created: AgentEndpoint[];
  try {
    argv = buildQemuArgs(spec, paths, { ...table, [p.name]: p });
    created = agentChannelsInArgv(argv);
  } catch (err) {
    return [...problems, `its QEMU command line cannot be built: ${(err as Error).message}`];
  }
  const dialed = p.endpoint({ cid: spec.cid }, paths);
  if (created.length !== 1) problems.push(`its QEMU command line creates ${created.length} agent channels (${JSON.stringify(created)}); exactly one is needed`);
  else if (!isDeepStrictEqual(created[0], dialed)) problems.push(`its QEMU command line creates ${JSON.stringify(created[0])} but the driver would dial ${JSON.stringify(dialed)}`);
  const kindOk = p.channel.kind === "virtio-serial" ? dialed.kind === "unix" : dialed.kind === "vsock" && dialed.port === p.channel.port;
  if (!kindOk) problems.push(`the driver would dial ${JSON.stringify(dialed)}, which does not reach a ${p.channel.kind} agent`);
  const bios = values(argv, "-bios");
  if (p.firmware === "tdvf" && !isDeepStrictEqual(bios, [spec.tdx!.firmware])) problems.push(`it declares TDVF firmware but its command line loads ${JSON.stringify(bios)}`);
  if (p.firmware === "qemu-default" && bios.length) problems.push(`it declares QEMU's default firmware but its command line loads ${JSON.stringify(bios)}`);
  if (p.firmware === "tdvf") {
    const missing = (["mrtd", "rtmr0", "rtmr1", "rtmr2"] as const).filter((r) => !p.measurements.includes(r));
    if (missing.length) problems.push(`a TD whose quotes are not checked on ${missing.join(", ")}`);
  }
  return problems;
}

/** Refuses a profile whose parts disagree; the driver runs it when it is built, so cvmd does not start with one. */
export function assertProfileConsistent(name: string, table: ProfileTable): Profile {
  if (!Object.hasOwn(table, name)) throw new VmmError("invalid_spec", `unknown profile ${JSON.stringify(name)}`);
  const p = table[name as keyof ProfileTable];
  const problems = p.name === name ? profileProblems(p, table) : [`its row is named ${JSON.stringify(p.name)}`];
  if (problems.length) throw new VmmError("invalid_spec", `profile ${name} is inconsistent:\n  - ${problems.join("\n  - ")}`);
  return p;
}
