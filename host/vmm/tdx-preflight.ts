import { access, readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";

import { run } from "../../shared/util/run.js";
import { DEFAULT_QGS, type QgsAddress } from "./hypervisor.js";

/** Upstream QEMU gained TDX (and the quote-generation-socket property) in 10.1. */
export const MIN_TDX_QEMU: readonly [number, number] = [10, 1];

export interface PreflightCheck {
  name: "kvm-tdx" | "kvm-device" | "vhost-vsock" | "qemu-version" | "qemu-tdx-object" | "firmware" | "qgs";
  ok: boolean;
  message: string;
}

export interface TdxPreflightResult {
  ok: boolean;
  checks: PreflightCheck[];
  /** Messages of the failed checks, for an operator. */
  problems: string[];
}

export interface TdxPreflightOptions {
  firmware: string;
  qgs?: QgsAddress;
  qemuBinary?: string;
  sysRoot?: string;
  devRoot?: string;
  socatBinary?: string;
  timeoutMs?: number;
}

/** Parses `qemu-system-x86_64 --version` output; null when it is not QEMU's banner. */
export function parseQemuVersion(out: string): [number, number, number] | null {
  const m = /QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?/.exec(out);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : null;
}

function atLeast(v: readonly number[], min: readonly number[]): boolean {
  for (let i = 0; i < min.length; i++) if ((v[i] ?? 0) !== min[i]) return (v[i] ?? 0) > min[i];
  return true;
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

function unixReachable(p: string, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.createConnection(p);
    const t = setTimeout(() => {
      s.destroy();
      resolve(`no answer within ${timeoutMs} ms`);
    }, timeoutMs);
    s.once("connect", () => {
      clearTimeout(t);
      s.destroy();
      resolve(null);
    });
    s.once("error", (e) => {
      clearTimeout(t);
      resolve(e.message);
    });
  });
}

/** Everything the `tdx` profile needs from this host, each with a message that says what to fix. */
export async function tdxPreflight(opts: TdxPreflightOptions): Promise<TdxPreflightResult> {
  const sys = opts.sysRoot ?? "/sys";
  const dev = opts.devRoot ?? "/dev";
  const qemu = opts.qemuBinary ?? "qemu-system-x86_64";
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const qgs = opts.qgs ?? DEFAULT_QGS;
  const checks: PreflightCheck[] = [];
  const add = (name: PreflightCheck["name"], ok: boolean, message: string) => checks.push({ name, ok, message });

  const tdxParam = path.join(sys, "module/kvm_intel/parameters/tdx");
  const tdxVal = await readFile(tdxParam, "utf8").then((s) => s.trim(), () => null);
  if (tdxVal === null) add("kvm-tdx", false, `host kernel has no KVM TDX support: ${tdxParam} is missing (needs a TDX-enabled kernel with kvm_intel loaded)`);
  else if (tdxVal !== "Y") add("kvm-tdx", false, `KVM TDX is disabled: ${tdxParam} is ${JSON.stringify(tdxVal)}, expected "Y" (load kvm_intel with tdx=1; check BIOS TDX/SEAM settings)`);
  else add("kvm-tdx", true, "KVM TDX enabled");

  const kvmDev = path.join(dev, "kvm");
  add("kvm-device", await exists(kvmDev), (await exists(kvmDev)) ? `${kvmDev} present` : `${kvmDev} is missing (KVM not available)`);
  const vsockDev = path.join(dev, "vhost-vsock");
  add("vhost-vsock", await exists(vsockDev), (await exists(vsockDev)) ? `${vsockDev} present` : `${vsockDev} is missing (modprobe vhost_vsock); the agent channel needs it`);

  let version: [number, number, number] | null = null;
  try {
    const out = await run(qemu, ["--version"], { timeoutMs });
    version = parseQemuVersion(out.stdout);
    if (!version) add("qemu-version", false, `could not parse the version of ${qemu}: ${JSON.stringify(out.stdout.split("\n")[0])}`);
    else if (!atLeast(version, MIN_TDX_QEMU)) add("qemu-version", false, `QEMU ${version.join(".")} is too old for TDX: need >= ${MIN_TDX_QEMU.join(".")}`);
    else add("qemu-version", true, `QEMU ${version.join(".")}`);
  } catch (e) {
    add("qemu-version", false, `cannot run ${qemu}: ${(e as Error).message}`);
  }

  try {
    const out = await run(qemu, ["-object", "help"], { timeoutMs });
    const has = /^\s*tdx-guest\s*$/m.test(out.stdout);
    add("qemu-tdx-object", has, has ? "QEMU knows tdx-guest" : `${qemu} has no tdx-guest object (built without TDX support)`);
  } catch (e) {
    add("qemu-tdx-object", false, `cannot list QEMU objects: ${(e as Error).message}`);
  }

  add("firmware", await exists(opts.firmware), (await exists(opts.firmware)) ? `TDVF ${opts.firmware}` : `TDVF firmware ${opts.firmware} is missing (install a TDX-enabled OVMF build)`);

  if (qgs.type === "unix") {
    const err = await unixReachable(qgs.path, timeoutMs);
    add("qgs", err === null, err === null ? `QGS at ${qgs.path}` : `quote generation service unreachable at unix:${qgs.path}: ${err} (is qgsd running?)`);
  } else {
    const where = `vsock:${qgs.cid}:${qgs.port}`;
    let err: string | null = null;
    if (!(await exists(path.join(dev, "vsock")))) err = `${path.join(dev, "vsock")} is missing (modprobe vsock_loopback/vhost_vsock)`;
    else {
      try {
        await run(opts.socatBinary ?? "socat", ["-u", "OPEN:/dev/null", `VSOCK-CONNECT:${qgs.cid}:${qgs.port}`], { timeoutMs });
      } catch (e) {
        err = (e as Error).message;
      }
    }
    add("qgs", err === null, err === null ? `QGS at ${where}` : `quote generation service unreachable at ${where}: ${err} (is qgsd running?)`);
  }

  const problems = checks.filter((c) => !c.ok).map((c) => c.message);
  return { ok: problems.length === 0, checks, problems };
}
