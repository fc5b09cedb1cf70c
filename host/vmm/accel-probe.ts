import { access, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { run, RunError } from "../../shared/util/run.js";
import type { Accel } from "./hypervisor.js";

/**
 * Firmware for the probe guest, assembled from this (GNU as, linked at 0xF0000, 64 KiB):
 *   reset vector (0xFFF0): ljmp $0xf000,$0
 *   16-bit: cli; out 'R' to COM1; lgdt; set CR0.PE; ljmp to 32-bit code
 *   32-bit: out 'P'; identity-map 1 GiB with 2 MiB pages at 0x1000..0x3fff; CR4.PAE; CR3; EFER.LME; CR0.PG;
 *           ljmp to 64-bit code
 *   64-bit: out 'L', '\n'; out to port 0xf4 (isa-debug-exit, QEMU exits with status 21); hlt loop
 * Real mode alone is not enough: on nested hosts where guests hang under KVM, real mode still runs and the vCPU
 * wedges at the switch to protected mode, so the probe has to go through protected and long mode like a kernel does.
 */
const PROBE_CODE =
  "fabaf803b052ee2e660f0116d0000f20c06683c8010f22c066ea20000f00080066b810008ed88ec08ed0b050eebf0010000031c0b9000c" +
  "0000f3abc7050010000003200000c7050020000003300000bf00300000b883000000b9000200008907050000200083c708e2f40f20e083c8" +
  "200f22e0b8001000000f22d8b9800000c00f320d000100000f300f20c00d000000800f22c0ea9b000f00180066baf803b04ceeb00aeee6f4" +
  "f4ebfd8db4000066900000000000000000ffff0000009acf00ffff00000092cf00ffff0000009aaf001f00b0000f";
const RESET_VECTOR = "ea000000f0";
const PROBE_MARK = "RPL";
/** isa-debug-exit turns the value 0x0a written by the probe into exit status (0x0a << 1) | 1. */
const PROBE_EXIT = 21;

export function probeFirmware(): Buffer {
  const img = Buffer.alloc(64 * 1024);
  Buffer.from(PROBE_CODE, "hex").copy(img, 0);
  Buffer.from(RESET_VECTOR, "hex").copy(img, 0xfff0);
  return img;
}

export interface ProbeAccelOptions {
  /** Operator override (the composition root reads CVM_ACCEL): skips the probe. */
  override?: Accel | "auto";
  timeoutMs?: number;
  qemuBinary?: string;
  kvmDevice?: string;
}

export interface ProbeAccelResult {
  accel: Accel;
  reason: string;
  elapsedMs: number;
}

/** KVM if /dev/kvm exists and a tiny guest reaches long mode and exits under it within the timeout, else TCG. */
export async function probeAccel(opts: ProbeAccelOptions = {}): Promise<ProbeAccelResult> {
  const t0 = performance.now();
  const res = (accel: Accel, reason: string): ProbeAccelResult => ({ accel, reason, elapsedMs: Math.round(performance.now() - t0) });
  if (opts.override === "kvm" || opts.override === "tcg") return res(opts.override, "override");
  const kvm = opts.kvmDevice ?? "/dev/kvm";
  try {
    await access(kvm);
  } catch {
    return res("tcg", `${kvm} is missing`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), "cvm-accel-probe-"));
  try {
    const fw = path.join(dir, "probe.bin");
    await writeFile(fw, probeFirmware());
    const args = ["-accel", "kvm", "-machine", "pc", "-m", "16", "-nodefaults", "-no-user-config", "-display", "none",
      "-no-reboot", "-bios", fw, "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=1"];
    const timeoutMs = opts.timeoutMs ?? 2_000;
    let out = "";
    let code: number | string | null = 0;
    try {
      // QEMU exits 0 when the timeout's SIGTERM reaches it, so a clean exit here also means "did not finish".
      out = (await run(opts.qemuBinary ?? "qemu-system-x86_64", args, { timeoutMs })).stdout;
    } catch (e) {
      if (!(e instanceof RunError)) throw e;
      out = e.stdout;
      code = e.code;
    }
    if (code === PROBE_EXIT && out.includes(PROBE_MARK)) return res("kvm", "KVM guest reached long mode");
    const reached = out.includes("P") ? "protected mode" : out.includes("R") ? "real mode" : "nothing";
    return res("tcg", `KVM guest did not finish within ${timeoutMs} ms (exit ${code}; got as far as ${reached})`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
