import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { chmod, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AdoptResult, GuestExit, Hypervisor, LaunchedVm, LaunchSpec, StopResult, VmInspection } from "../../host/vmm/hypervisor.js";
import { agentChannelsInArgv } from "../../host/vmm/profile-check.js";
import { buildQemuArgs } from "../../host/vmm/qemu-args.js";
import { ensureRunDir, runPaths, writeLaunchRecord } from "../../host/vmm/run-dir.js";
import type { AgentDoubleMode } from "./agent-double.js";

const REPO = fileURLToPath(new URL("../..", import.meta.url));
const AGENT_DOUBLE = join(REPO, "test/support/agent-double.ts");

/**
 * TEST STAND-IN for the vsock address: a socat wrapper that turns `VSOCK-CONNECT:<cid>:<port>` into
 * `UNIX-CONNECT:<dir>/vsock-<cid>-<port>.sock` and runs the real socat, so the driver's own bridge
 * (VsockSocatConnector) is what runs, with each CID reaching only its own stand-in socket.
 */
export async function socatVsockStandIn(dir: string, socat = "/usr/bin/socat"): Promise<{ socat: string; path(cid: number, port: number): string }> {
  const wrapper = join(dir, "socat-vsock-stand-in");
  await writeFile(
    wrapper,
    `#!/bin/sh
# TEST STAND-IN: vsock addresses become per-CID Unix sockets under ${dir}
for a; do
  shift
  case "$a" in
    VSOCK-CONNECT:*) r=\${a#VSOCK-CONNECT:}; set -- "$@" "UNIX-CONNECT:${dir}/vsock-\${r%%:*}-\${r#*:}.sock" ;;
    *) set -- "$@" "$a" ;;
  esac
done
exec ${socat} "$@"
`,
  );
  await chmod(wrapper, 0o755);
  return { socat: wrapper, path: (cid, port) => join(dir, `vsock-${cid}-${port}.sock`) };
}

interface Guest {
  child: ChildProcess;
  argv: string[];
  listen: string;
  setups: number;
}

/**
 * TEST DOUBLE of the hypervisor for guests whose agent misbehaves: it builds the real QEMU argv and
 * run dir for the launch, reads the agent channel back out of that argv and, instead of QEMU, starts
 * the agent double process listening at the channel's far end (the chardev socket for plain, the
 * vsock stand-in for the CID in the argv for tdx). The process is "the VM": stop kills it, and its
 * exit is the guest's (with the exit code or signal a child process has and QEMU's does not).
 */
export class AgentVmHypervisorDouble implements Hypervisor {
  readonly guests = new Map<string, Guest>();
  private readonly exits = new EventEmitter<{ exit: [GuestExit] }>();

  on(event: "exit", listener: (exit: GuestExit) => void): void {
    this.exits.on(event, listener);
  }

  off(event: "exit", listener: (exit: GuestExit) => void): void {
    this.exits.off(event, listener);
  }

  constructor(private readonly o: { dataDir: string; mode: AgentDoubleMode; vsockPath(cid: number, port: number): string }) {}

  async launch(spec: LaunchSpec): Promise<LaunchedVm> {
    const p = runPaths(this.o.dataDir, spec.instanceId);
    const argv = buildQemuArgs(spec, p);
    await ensureRunDir(p);
    const channels = agentChannelsInArgv(argv);
    if (channels.length !== 1) throw new Error(`argv creates ${channels.length} agent channels`);
    const ch = channels[0];
    const listen = ch.kind === "unix" ? ch.path : this.o.vsockPath(ch.cid, ch.port);
    await rm(listen, { force: true });
    const record = { version: 1 as const, instanceId: spec.instanceId, profile: spec.profile, accel: spec.accel, cid: spec.cid, tap: spec.nic.tap, mac: spec.nic.mac, netns: spec.netns ?? null, argv, recordedAt: new Date().toISOString(), serialOffset: 0 };
    await writeLaunchRecord(p, record);
    const started = performance.now();
    const child = spawn(process.execPath, ["--import", "tsx", AGENT_DOUBLE, "--listen", listen, "--mode", this.o.mode], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
    const g: Guest = { child, argv, listen, setups: 0 };
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`agent double did not listen within 30 s: ${stderr}`)), 30_000);
      child.once("exit", (c) => reject(new Error(`agent double exited (${c}): ${stderr}`)));
      child.stdout!.on("data", (d: Buffer) => {
        for (const line of d.toString().split("\n")) {
          if (line === "listening") {
            clearTimeout(t);
            resolve();
          }
          if (line.startsWith("setup ")) g.setups++;
        }
      });
    });
    await writeFile(p.pidfile, `${child.pid}\n`);
    child.once("exit", (code, sig) =>
      this.exits.emit("exit", { instanceId: spec.instanceId, kind: sig ? "killed" : "poweroff", detail: sig ? `signal ${sig}` : `exit code ${code}` }),
    );
    this.guests.set(spec.instanceId, g);
    return { instanceId: spec.instanceId, pid: child.pid!, runDir: p.dir, record, startMs: performance.now() - started };
  }

  private alive(g: Guest | undefined): boolean {
    return !!g && g.child.exitCode === null && g.child.signalCode === null;
  }

  async stop(instanceId: string): Promise<StopResult> {
    const g = this.guests.get(instanceId);
    const t0 = Date.now();
    if (!g || !this.alive(g)) return { stoppedBy: "already-stopped", elapsedMs: 0 };
    const exited = new Promise((r) => g.child.once("exit", r));
    g.child.kill("SIGKILL");
    await exited;
    return { stoppedBy: "sigkill", elapsedMs: Date.now() - t0 };
  }

  async inspect(instanceId: string): Promise<VmInspection> {
    const g = this.guests.get(instanceId);
    return this.alive(g) ? { instanceId, state: "running", pid: g!.child.pid } : { instanceId, state: "stopped" };
  }

  async adopt(instanceId: string): Promise<AdoptResult> {
    return { adopted: false, instanceId, reason: "no-record", detail: "the agent VM double does not survive its test" };
  }

  async list(): Promise<string[]> {
    return readdir(join(this.o.dataDir, "vms")).catch(() => []);
  }

  async purge(instanceId: string): Promise<void> {
    await rm(runPaths(this.o.dataDir, instanceId).dir, { recursive: true, force: true });
  }

  /** Kills whatever is still running (afterAll). */
  async killAll(): Promise<void> {
    await Promise.all([...this.guests.keys()].map((id) => this.stop(id)));
  }
}
