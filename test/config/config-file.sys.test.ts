import { spawn } from "node:child_process";
import { existsSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { tempDir } from "../support/daemon.js";
import { cvmctl, tsEntry } from "../support/processes.js";
import { prerequisites } from "../support/prerequisites.js";

/**
 * CVM_CONFIG_FILE as the installed unit uses it (issue 16 must-show 2): the real cvmd and cvmctl,
 * spawned with a clean environment that holds nothing but the file's path.
 */
const t = tempDir("cvm-config-file-");
afterAll(() => t.remove());

function writeConfig(name: string, settings: Record<string, string>): string {
  const path = join(t.path, name);
  writeFileSync(path, JSON.stringify(settings, null, 2));
  return path;
}

/** Runs cvmd to its end (bounded); resolves with its exit code and everything it printed. */
function runCvmd(env: Record<string, string>, timeoutMs = 60_000): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, tsEntry("host/main.ts"), { env: { PATH: process.env.PATH!, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr.on("data", (c: Buffer) => (err += c.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
}

describe("cvmd with CVM_PROFILE=tdx in CVM_CONFIG_FILE on a host that cannot run TDX", () => {
  const why = prerequisites("the TDX refusal on a non-TDX host", { root: true });
  // Not a missing prerequisite: on a TDX host cvmd rightly starts, so there is nothing to refuse.
  const tdxHost = existsSync("/sys/module/kvm_intel/parameters/tdx");
  if (tdxHost) console.warn("skipping the TDX refusal on a non-TDX host: this host has TDX");

  test.runIf(why === null && !tdxHost)("refuses to start (exit 78) listing the preflight problems, and never serves plain", async () => {
    const dataDir = join(t.path, "data-tdx");
    const file = writeConfig("tdx.json", { CVM_PROFILE: "tdx", CVM_DATA_DIR: dataDir, CVM_LISTEN: "127.0.0.1:0", CVM_TDX_FIRMWARE: join(t.path, "no-such-tdvf.fd") });
    const r = await runCvmd({ CVM_CONFIG_FILE: file });
    expect(r.code, r.err).toBe(78);
    expect(r.err).toMatch(/^cvmd: CVM_PROFILE=tdx but this host cannot run TDX guests:\n/);
    // The problems are the preflight's own lines, whatever this host lacks; the firmware is ours to miss.
    const problems = r.err.split("\n").filter((l) => l.startsWith("  - "));
    expect(problems.length).toBeGreaterThan(0);
    expect(problems.join("\n")).toContain(`TDVF firmware ${join(t.path, "no-such-tdvf.fd")} is missing`);
    // Nothing was served: no listener, no database, no guest network.
    expect(r.out).not.toMatch(/cvmd listening/);
    expect(r.out).not.toMatch(/QEMU acceleration chosen/);
    expect(existsSync(join(dataDir, "cvm.sqlite"))).toBe(false);
  }, 90_000);

  test.runIf(why === null && !tdxHost)("the environment's CVM_PROFILE wins over the file's: tdx in the environment is refused the same way", async () => {
    const file = writeConfig("plain.json", { CVM_PROFILE: "plain", CVM_DATA_DIR: join(t.path, "data-env"), CVM_LISTEN: "127.0.0.1:0" });
    const r = await runCvmd({ CVM_CONFIG_FILE: file, CVM_PROFILE: "tdx", CVM_TDX_FIRMWARE: join(t.path, "no-such-tdvf.fd") });
    expect(r.code, r.err).toBe(78);
    expect(r.err).toMatch(/CVM_PROFILE=tdx but this host cannot run TDX guests/);
  }, 90_000);

  test("a misspelt key in the file stops cvmd before anything starts, naming the key", async () => {
    const file = writeConfig("typo.json", { CVM_PROFLE: "tdx", CVM_DATA_DIR: join(t.path, "data-typo") });
    const r = await runCvmd({ CVM_CONFIG_FILE: file });
    expect(r.code).toBe(78);
    expect(r.err).toBe(`cvmd: configuration error: CVM_PROFLE in CVM_CONFIG_FILE=${file}: not a setting of cvmd (see the README's configuration table)\n`);
  }, 90_000);

  test("a bad VM value in the file is a configuration error even with CVM_DRIVER=none", async () => {
    const file = writeConfig("bad-vm.json", { CVM_DRIVER: "none", CVM_VM_VCPUS: "0", CVM_DATA_DIR: join(t.path, "data-bad") });
    const r = await runCvmd({ CVM_CONFIG_FILE: file });
    expect(r.code).toBe(78);
    expect(r.err).toBe("cvmd: configuration error: CVM_VM_VCPUS=0: expected an integer between 1 and 256\n");
  }, 90_000);
});

describe("cvmctl reads the same file", () => {
  const images = join(t.path, "images");
  mkdirSync(join(images, "img-test-1"), { recursive: true });
  writeFileSync(join(images, "img-test-1", "manifest.json"), JSON.stringify({ image_id: "img-test-1", created: "2026-12-03T00:00:00Z" }));
  symlinkSync("img-test-1", join(images, "current"));
  const file = writeConfig("cvmctl.json", {
    CVM_DATA_DIR: join(t.path, "data-cvmctl"),
    CVM_IMAGE_DIR: join(images, "current"),
    CVM_VM_MEMORY_MIB: "1024",
    CVM_VM_VCPUS: "3",
    CVM_CAPACITY_MEMORY_MIB: "4096",
    CVM_CAPACITY_VCPUS: "64",
  });

  test("image list: the images beside the file's CVM_IMAGE_DIR", async () => {
    const r = await cvmctl(["image", "list", "--json"], { CVM_CONFIG_FILE: file });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(expect.arrayContaining([expect.objectContaining({ id: "img-test-1", current: true })]));
  }, 90_000);

  test("pool: the file's guest size and capacity, and its current image", async () => {
    const r = await cvmctl(["pool", "--json"], { CVM_CONFIG_FILE: file });
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout) as { current_image: string; capacity: Record<string, number> };
    expect(s.current_image).toBe("img-test-1");
    expect(s.capacity).toMatchObject({ guest_memory_mib: 1024, guest_vcpus: 3, memory_mib: 4096, vcpus: 64, max_guests: 4 });
  }, 90_000);

  test("a bad value in the file: exit 78, the same one line as cvmd", async () => {
    const bad = writeConfig("cvmctl-bad.json", { CVM_PROFILE: "sev" });
    const r = await cvmctl(["pool"], { CVM_CONFIG_FILE: bad });
    expect(r.code).toBe(78);
    expect(r.stderr).toBe("cvmctl: configuration error: CVM_PROFILE=sev: expected plain or tdx\n");
  }, 90_000);
});
