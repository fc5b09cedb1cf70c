import { execFileSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { MIN_TDX_QEMU, parseQemuVersion, tdxPreflight } from "./tdx-preflight.js";
import { prerequisites } from "../../test/support/prerequisites.js";

test("parses QEMU version banners", () => {
  expect(parseQemuVersion("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n")).toEqual([7, 2, 22]);
  expect(parseQemuVersion("QEMU emulator version 10.1.0\nCopyright")).toEqual([10, 1, 0]);
  expect(parseQemuVersion("QEMU emulator version 10.1\n")).toEqual([10, 1, 0]);
  expect(parseQemuVersion("something else")).toBeNull();
});

/**
 * The probe's inputs are injected: a /sys and /dev tree in a temp dir, and FakeQemu (TEST DOUBLE: a
 * shell script standing in for qemu-system-x86_64, since no QEMU with TDX exists here) that prints a
 * chosen version banner and object list. The checks then assert behaviour, not this host's versions.
 */
describe("tdxPreflight with injected inputs", () => {
  let root: string;
  let qgs: net.Server;
  const qgsPath = () => path.join(root, "qgs.sock");

  async function fakeQemu(name: string, banner: string, objects: string[]): Promise<string> {
    const p = path.join(root, name);
    const list = ["List of user creatable objects:", ...objects.map((o) => `  ${o}`)].join("\\n");
    await writeFile(p, `#!/bin/sh\n# FakeQemu: TEST DOUBLE\ncase "$1" in\n  --version) printf '%s\\n' '${banner}' ;;\n  -object) printf '${list}\\n' ;;\n  *) exit 1 ;;\nesac\n`);
    await chmod(p, 0o755);
    return p;
  }

  /** A host that has everything: tdx=Y, /dev/kvm, /dev/vhost-vsock, the firmware file. */
  async function goodTree(tag: string): Promise<{ sysRoot: string; devRoot: string; firmware: string }> {
    const sysRoot = path.join(root, `sys-${tag}`);
    await mkdir(path.join(sysRoot, "module/kvm_intel/parameters"), { recursive: true });
    await writeFile(path.join(sysRoot, "module/kvm_intel/parameters/tdx"), "Y\n");
    const devRoot = path.join(root, `dev-${tag}`);
    await mkdir(devRoot, { recursive: true });
    await writeFile(path.join(devRoot, "kvm"), "");
    await writeFile(path.join(devRoot, "vhost-vsock"), "");
    const firmware = path.join(root, `OVMF.tdx-${tag}.fd`);
    await writeFile(firmware, "");
    return { sysRoot, devRoot, firmware };
  }

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), "tdx-pre-"));
    qgs = net.createServer((s) => s.end());
    await new Promise<void>((r) => qgs.listen(qgsPath(), r));
  });
  afterAll(async () => {
    await new Promise<void>((r) => qgs.close(() => r()));
    await rm(root, { recursive: true, force: true });
  });

  test("everything present: ok, no problems", async () => {
    const qemu = await fakeQemu("qemu-ok", `QEMU emulator version ${MIN_TDX_QEMU.join(".")}.0`, ["memory-backend-ram", "tdx-guest"]);
    const r = await tdxPreflight({ ...(await goodTree("ok")), qemuBinary: qemu, qgs: { type: "unix", path: qgsPath() } });
    expect(r.problems).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.checks.map((c) => c.name).sort()).toEqual(["firmware", "kvm-device", "kvm-tdx", "qemu-tdx-object", "qemu-version", "qgs", "vhost-vsock"]);
  });

  test("a QEMU older than the minimum is named as too old; one without tdx-guest as built without TDX", async () => {
    const qemu = await fakeQemu("qemu-old", "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)", ["memory-backend-ram"]);
    const r = await tdxPreflight({ ...(await goodTree("old")), qemuBinary: qemu, qgs: { type: "unix", path: qgsPath() } });
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([`QEMU 7.2.22 is too old for TDX: need >= ${MIN_TDX_QEMU.join(".")}`, `${qemu} has no tdx-guest object (built without TDX support)`]);
  });

  test("an unparseable banner and a QEMU that cannot run are reported, not thrown", async () => {
    const odd = await fakeQemu("qemu-odd", "Not QEMU at all", ["tdx-guest"]);
    const r = await tdxPreflight({ ...(await goodTree("odd")), qemuBinary: odd, qgs: { type: "unix", path: qgsPath() } });
    expect(r.problems).toEqual([`could not parse the version of ${odd}: "Not QEMU at all"`]);
    const missing = path.join(root, "no-such-qemu");
    const r2 = await tdxPreflight({ ...(await goodTree("missing")), qemuBinary: missing, qgs: { type: "unix", path: qgsPath() } });
    const byName = Object.fromEntries(r2.checks.map((c) => [c.name, c]));
    expect(byName["qemu-version"]!.message).toMatch(new RegExp(`^cannot run ${missing}`));
    expect(byName["qemu-tdx-object"]!.message).toMatch(/^cannot list QEMU objects/);
  });

  test("an empty host tree: every missing piece has its own message", async () => {
    const qemu = await fakeQemu("qemu-new", "QEMU emulator version 10.2.0", ["tdx-guest"]);
    const r = await tdxPreflight({ firmware: path.join(root, "OVMF.tdx.fd"), sysRoot: path.join(root, "sys"), devRoot: path.join(root, "dev"), qemuBinary: qemu });
    const failed = Object.fromEntries(r.checks.filter((c) => !c.ok).map((c) => [c.name, c.message]));
    expect(Object.keys(failed).sort()).toEqual(["firmware", "kvm-device", "kvm-tdx", "qgs", "vhost-vsock"]);
    expect(failed["kvm-tdx"]).toMatch(/no KVM TDX support: .*module\/kvm_intel\/parameters\/tdx is missing/);
    expect(failed["kvm-device"]).toMatch(/dev\/kvm is missing/);
    expect(failed["vhost-vsock"]).toMatch(/vhost-vsock is missing/);
    expect(failed.firmware).toMatch(/TDVF firmware .*OVMF\.tdx\.fd is missing/);
    // the default QGS address is vsock; without /dev/vsock nothing is dialled
    expect(failed.qgs).toMatch(/quote generation service unreachable at vsock:2:4050: .*dev\/vsock is missing/);
    expect(r.problems).toHaveLength(5);
  });

  test("a disabled tdx parameter and an unreachable unix QGS are reported as such", async () => {
    const t = await goodTree("off");
    await writeFile(path.join(t.sysRoot, "module/kvm_intel/parameters/tdx"), "N\n");
    const qemu = await fakeQemu("qemu-off", "QEMU emulator version 10.1.0", ["tdx-guest"]);
    const r = await tdxPreflight({ ...t, qemuBinary: qemu, qgs: { type: "unix", path: path.join(root, "nobody.sock") } });
    const byName = Object.fromEntries(r.checks.map((c) => [c.name, c]));
    expect(byName["kvm-tdx"]!.message).toMatch(/KVM TDX is disabled: .* is "N", expected "Y"/);
    expect(byName.qgs!.message).toMatch(/unreachable at unix:.*nobody\.sock: .*ENOENT/);
    expect(r.problems).toHaveLength(2);
  });
});

const why = prerequisites("the real-QEMU preflight check", { tools: [["qemu-system-x86_64", ["--version"]]] });
const realQemu = why === null ? execFileSync("qemu-system-x86_64", ["--version"], { encoding: "utf8" }) : null;

describe.skipIf(why !== null)("tdxPreflight with this host's real QEMU", () => {
  test("its verdict on the QEMU is consistent with the QEMU's own banner and object list", async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), "tdx-pre-real-"));
    try {
      const r = await tdxPreflight({ firmware: path.join(root, "fw.fd"), sysRoot: path.join(root, "sys"), devRoot: path.join(root, "dev") });
      const byName = Object.fromEntries(r.checks.map((c) => [c.name, c]));
      const v = parseQemuVersion(realQemu!)!;
      expect(v).not.toBeNull();
      const newEnough = v[0] > MIN_TDX_QEMU[0] || (v[0] === MIN_TDX_QEMU[0] && v[1] >= MIN_TDX_QEMU[1]);
      expect(byName["qemu-version"]).toEqual({ name: "qemu-version", ok: newEnough, message: newEnough ? `QEMU ${v.join(".")}` : `QEMU ${v.join(".")} is too old for TDX: need >= ${MIN_TDX_QEMU.join(".")}` });
      const objects = execFileSync("qemu-system-x86_64", ["-object", "help"], { encoding: "utf8" });
      expect(byName["qemu-tdx-object"]!.ok).toBe(/^\s*tdx-guest\s*$/m.test(objects));
      // the injected empty tree makes the host checks fail whatever this machine has
      expect(r.ok).toBe(false);
      expect(r.problems).toEqual(r.checks.filter((c) => !c.ok).map((c) => c.message));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
