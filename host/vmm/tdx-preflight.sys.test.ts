import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, describe, expect, test } from "vitest";

import { parseQemuVersion, tdxPreflight } from "./tdx-preflight.js";

test("parses QEMU version banners", () => {
  expect(parseQemuVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n")).toEqual([7, 2, 22]);
  expect(parseQemuVersion("QEMU emulator version 10.1.0\nCopyright")).toEqual([10, 1, 0]);
  expect(parseQemuVersion("QEMU emulator version 10.1\n")).toEqual([10, 1, 0]);
  expect(parseQemuVersion("something else")).toBeNull();
});

const qemu = (() => {
  try {
    execFileSync("qemu-system-x86_64", ["--version"]);
    return true;
  } catch {
    return false;
  }
})();
if (!qemu) console.warn("skipping TDX preflight tests: qemu-system-x86_64 not installed");

describe.skipIf(!qemu)("tdxPreflight on a host without TDX (this one)", async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), "tdx-pre-"));
  afterAll(() => rm(root, { recursive: true, force: true }));

  test("reports every missing piece with a clear message", async () => {
    const r = await tdxPreflight({ firmware: path.join(root, "OVMF.tdx.fd"), sysRoot: path.join(root, "sys"), devRoot: path.join(root, "dev") });
    console.log(r.problems.join("\n"));
    expect(r.ok).toBe(false);
    const failed = Object.fromEntries(r.checks.filter((c) => !c.ok).map((c) => [c.name, c.message]));
    expect(failed["kvm-tdx"]).toMatch(/no KVM TDX support: .*module\/kvm_intel\/parameters\/tdx is missing/);
    expect(failed["kvm-device"]).toMatch(/dev\/kvm is missing/);
    expect(failed["vhost-vsock"]).toMatch(/vhost-vsock is missing/);
    expect(failed["qemu-version"]).toMatch(/QEMU 7\.2\.\d+ is too old for TDX: need >= 10\.1/);
    expect(failed["qemu-tdx-object"]).toMatch(/has no tdx-guest object/);
    expect(failed.firmware).toMatch(/TDVF firmware .*OVMF\.tdx\.fd is missing/);
    expect(failed.qgs).toMatch(/quote generation service unreachable at vsock:2:4050/);
    expect(r.problems).toHaveLength(7);
  });

  test("a disabled tdx parameter and an unreachable unix QGS are reported as such; present pieces pass", async () => {
    const sys = path.join(root, "sys2");
    await mkdir(path.join(sys, "module/kvm_intel/parameters"), { recursive: true });
    await writeFile(path.join(sys, "module/kvm_intel/parameters/tdx"), "N\n");
    const dev = path.join(root, "dev2");
    await mkdir(dev, { recursive: true });
    await writeFile(path.join(dev, "kvm"), "");
    const fw = path.join(root, "fw.fd");
    await writeFile(fw, "");
    const r = await tdxPreflight({ firmware: fw, sysRoot: sys, devRoot: dev, qgs: { type: "unix", path: path.join(root, "qgs.sock") } });
    const byName = Object.fromEntries(r.checks.map((c) => [c.name, c]));
    expect(byName["kvm-tdx"].message).toMatch(/KVM TDX is disabled: .* is "N", expected "Y"/);
    expect(byName["kvm-device"].ok).toBe(true);
    expect(byName.firmware.ok).toBe(true);
    expect(byName.qgs.message).toMatch(/unreachable at unix:.*qgs\.sock: .*ENOENT/);
  });
});
