import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { describe, expect, test } from "vitest";

import { run, RunError } from "../../shared/util/run.js";
import { probeAccel, probeFirmware } from "./accel-probe.js";

const qemu = (() => {
  try {
    execFileSync("qemu-system-x86_64", ["--version"]);
    return true;
  } catch {
    return false;
  }
})();
if (!qemu) console.warn("skipping accel probe tests: qemu-system-x86_64 not installed");

describe.skipIf(!qemu)("probeAccel", () => {
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

  test("overrides skip the probe", async () => {
    expect(await probeAccel({ override: "kvm" })).toMatchObject({ accel: "kvm", reason: "override" });
    expect(await probeAccel({ override: "tcg" })).toMatchObject({ accel: "tcg", reason: "override" });
  });

  test("no KVM device means TCG", async () => {
    expect(await probeAccel({ kvmDevice: "/nonexistent/kvm" })).toMatchObject({ accel: "tcg", reason: "/nonexistent/kvm is missing" });
  });

  // On this machine /dev/kvm exists but nested guests wedge at the switch to protected mode.
  test.runIf(process.env.CVM_EXPECT_KVM !== "1")("falls back to TCG where KVM guests hang (this host)", async () => {
    const r = await probeAccel({ timeoutMs: 1_500 });
    console.log(`probeAccel: ${JSON.stringify(r)}`);
    expect(r.accel).toBe("tcg");
    expect(r.elapsedMs).toBeLessThan(5_000);
    expect(r.reason).toMatch(/did not finish within 1500 ms/);
  });
});
