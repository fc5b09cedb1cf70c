import { access, chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { run, RunError } from "../../shared/util/run.js";
import { probeAccel, probeFirmware } from "./accel-probe.js";
import { prerequisites } from "../../test/support/prerequisites.js";

const why = prerequisites("the real-QEMU accel probe tests", { tools: [["qemu-system-x86_64", ["--version"]]] });

/**
 * Behaviour with injected inputs: a stand-in KVM device (a temp file) and FakeQemu (TEST DOUBLE: a
 * shell script in place of qemu-system-x86_64, because whether KVM guests run or hang is a property of
 * the machine, and each branch must be tested on every machine).
 */
describe("probeAccel decides from what the probe guest did", () => {
  let root: string;
  let kvm: string;
  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), "accel-probe-"));
    kvm = path.join(root, "kvm");
    await writeFile(kvm, "");
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  async function fakeQemu(name: string, body: string): Promise<string> {
    const p = path.join(root, name);
    await writeFile(p, `#!/bin/sh\n# FakeQemu: TEST DOUBLE\n${body}\n`);
    await chmod(p, 0o755);
    return p;
  }

  test("the guest reaches long mode and exits through isa-debug-exit: KVM", async () => {
    const q = await fakeQemu("qemu-kvm-works", "printf 'RPL\\n'; exit 21");
    expect(await probeAccel({ qemuBinary: q, kvmDevice: kvm })).toMatchObject({ accel: "kvm", reason: "KVM guest reached long mode" });
  });

  test("the guest hangs: TCG within the timeout, saying how far it got", async () => {
    const q = await fakeQemu("qemu-kvm-hangs", "printf 'RP'; exec sleep 30");
    const t0 = Date.now();
    const r = await probeAccel({ qemuBinary: q, kvmDevice: kvm, timeoutMs: 300 });
    expect(r.accel).toBe("tcg");
    expect(r.reason).toMatch(/^KVM guest did not finish within 300 ms \(exit timeout; got as far as protected mode\)$/);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  test("QEMU exits early without the mark (e.g. KVM refused): TCG", async () => {
    const q = await fakeQemu("qemu-kvm-refused", "echo 'failed to initialize kvm' >&2; exit 1");
    expect(await probeAccel({ qemuBinary: q, kvmDevice: kvm })).toMatchObject({ accel: "tcg", reason: expect.stringMatching(/exit 1; got as far as nothing/) });
  });

  test("overrides skip the probe; no KVM device means TCG", async () => {
    expect(await probeAccel({ override: "kvm", kvmDevice: "/nonexistent/kvm" })).toMatchObject({ accel: "kvm", reason: "override" });
    expect(await probeAccel({ override: "tcg" })).toMatchObject({ accel: "tcg", reason: "override" });
    expect(await probeAccel({ kvmDevice: "/nonexistent/kvm" })).toMatchObject({ accel: "tcg", reason: "/nonexistent/kvm is missing" });
  });
});

describe.skipIf(why !== null)("probeAccel with this host's real QEMU", () => {
  test("the probe firmware reaches long mode and exits under TCG (so a KVM timeout means KVM, not the payload)", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "probe-fw-"));
    try {
      const fw = path.join(dir, "fw.bin");
      await writeFile(fw, probeFirmware());
      const err = await run("qemu-system-x86_64", ["-accel", "tcg", "-machine", "pc", "-m", "16", "-nodefaults", "-display", "none",
        "-no-reboot", "-bios", fw, "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=1"], { timeoutMs: 10_000 }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(RunError);
      expect((err as RunError).code).toBe(21);
      expect((err as RunError).stdout).toBe("RPL\n");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("the real probe runs once and its answer is self-consistent, whatever this machine's KVM does", async () => {
    const timeoutMs = 1_500;
    const r = await probeAccel({ timeoutMs });
    console.log(`probeAccel: ${JSON.stringify(r)}`);
    const hasKvm = await access("/dev/kvm").then(() => true, () => false);
    if (!hasKvm) expect(r).toMatchObject({ accel: "tcg", reason: "/dev/kvm is missing" });
    else if (r.accel === "kvm") expect(r.reason).toBe("KVM guest reached long mode");
    else expect(r.reason).toMatch(new RegExp(`^KVM guest did not finish within ${timeoutMs} ms \\(exit .*; got as far as (nothing|real mode|protected mode)\\)$`));
    // bounded by the timeout plus QEMU's start and the kill, never a hang
    expect(r.elapsedMs).toBeLessThan(timeoutMs + 5_000);
  });
});
