import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { parseTreeListing } from "../../guest/setup/openclaw-tree.js";
import { compareMeasurements, parseManifest } from "../../shared/tdx/measurements.js";
import { MIN_TDX_QEMU as PREFLIGHT_MIN_TDX_QEMU } from "../../host/vmm/tdx-preflight.js";
import { agentDeps, listing, manifest, measure, MIN_TDX_QEMU, mrtd, parseQemuVersion, peImageHash, qemuPatchedKernel, replay } from "./image-tool.mjs";
import { prerequisites } from "../../test/support/prerequisites.js";

// The packaged OVMF build (Debian ovmf, which install-deps.sh installs).
const OVMF = "/usr/share/ovmf/OVMF.fd";
const noOvmf = prerequisites("TDVF metadata checks", { files: [OVMF] });

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");
const sha384 = (b: Buffer | string) => createHash("sha384").update(b).digest();

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "image-tool-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe("listing", () => {
  test("lists files and symlinks sorted bytewise with mode, size and sha256; digest is the listing's sha256", async () => {
    const tree = join(dir, "tree");
    mkdirSync(join(tree, "b"), { recursive: true });
    mkdirSync(join(tree, "empty"));
    writeFileSync(join(tree, "b", "x.js"), "x");
    writeFileSync(join(tree, "B.txt"), "upper");
    writeFileSync(join(tree, "run"), "#!/bin/sh\n");
    chmodSync(join(tree, "run"), 0o755);
    chmodSync(join(tree, "b", "x.js"), 0o644);
    chmodSync(join(tree, "B.txt"), 0o644);
    symlinkSync("b/x.js", join(tree, "link"));

    const digest = await listing(tree, join(dir, "listing"));
    const text = readFileSync(join(dir, "listing"), "utf8");
    // The agent's own parser reads what the image build wrote: one format, two sides.
    const entries = parseTreeListing(text);
    expect(entries.map((e) => [e.kind, e.path])).toEqual([
      ["f", "B.txt"],
      ["d", "b"],
      ["f", "b/x.js"],
      ["d", "empty"],
      ["l", "link"],
      ["f", "run"],
    ]);
    expect(entries.find((e) => e.path === "run")).toMatchObject({ mode: 0o755, size: 10, sha256: sha256("#!/bin/sh\n") });
    expect(entries.find((e) => e.path === "link")?.sha256).toBe(sha256("b/x.js"));
    expect(digest).toBe(sha256(text));
  });

  test("a one-byte change in any file changes the digest", async () => {
    const tree = join(dir, "tree");
    mkdirSync(tree);
    writeFileSync(join(tree, "a"), "hello");
    const before = await listing(tree, join(dir, "l1"));
    writeFileSync(join(tree, "a"), "hellp");
    expect(await listing(tree, join(dir, "l2"))).not.toBe(before);
  });

  test("refuses names that would break the line format", async () => {
    const tree = join(dir, "tree");
    mkdirSync(tree);
    writeFileSync(join(tree, "bad\tname"), "");
    await expect(listing(tree, join(dir, "l"))).rejects.toThrow(/unlistable/);
  });
});

describe("agentDeps", () => {
  const pkg = (root: string, rel: string, body: object) => {
    mkdirSync(join(root, rel), { recursive: true });
    writeFileSync(join(root, rel, "package.json"), JSON.stringify(body));
  };

  test("follows imports, dependencies and installed optional dependencies, nested where Node would find them", () => {
    const nm = join(dir, "node_modules");
    pkg(nm, "cbor-x", { name: "cbor-x", optionalDependencies: { "cbor-extract": "1" } });
    pkg(nm, "cbor-extract", { name: "cbor-extract", dependencies: { helper: "2" }, optionalDependencies: { "not-installed": "1" } });
    pkg(nm, "cbor-extract/node_modules/helper", { name: "helper" });
    pkg(nm, "helper", { name: "helper", version: "top-level, shadowed" });
    pkg(nm, "@scope/lib", { name: "@scope/lib" });
    pkg(nm, "unused", { name: "unused" });
    const js = join(dir, "guest");
    mkdirSync(js);
    writeFileSync(join(js, "main.js"), 'import { x } from "@scope/lib/sub";\nimport fs from "node:fs";\nimport { y } from "./local.js";\n');
    expect(agentDeps(nm, [js])).toEqual(["@scope/lib", "cbor-extract", "cbor-extract/node_modules/helper", "cbor-x"]);
  });

  test("fails when the agent imports a package that is not installed", () => {
    const nm = join(dir, "node_modules");
    pkg(nm, "cbor-x", { name: "cbor-x" });
    const js = join(dir, "guest");
    mkdirSync(js);
    writeFileSync(join(js, "main.js"), 'import "missing-pkg";\n');
    expect(() => agentDeps(nm, [js])).toThrow(/missing-pkg/);
  });
});

describe("measurements", () => {
  test("replay extends from 48 zero bytes: SHA-384(register || digest)", () => {
    const d1 = sha384("one");
    const d2 = sha384("two");
    const r1 = sha384(Buffer.concat([Buffer.alloc(48), d1]));
    expect(replay([d1, d2]).toString("hex")).toBe(sha384(Buffer.concat([r1, d2])).toString("hex"));
  });

  const kernelPath = join(import.meta.dirname, "..", "out", "current", "vmlinuz");
  // Built by images/build.sh (make image), which `make test` runs first.
  const noKernel = prerequisites("kernel image checks", { files: [kernelPath] });

  test.skipIf(noKernel !== null)("the PE image hash equals the Authenticode digest Debian signed into the kernel", () => {
    const kernel = readFileSync(kernelPath);
    const pe = kernel.readUInt32LE(0x3c);
    const opt = pe + 24;
    const dirs = opt + (kernel.readUInt16LE(opt) === 0x20b ? 112 : 96);
    const certOff = kernel.readUInt32LE(dirs + 32);
    const certLen = kernel.readUInt32LE(dirs + 36);
    expect(certLen).toBeGreaterThan(0);
    const sig = kernel.subarray(certOff, certOff + certLen);
    // SpcIndirectDataContent's DigestInfo: sha256 OID, NULL, OCTET STRING of 32 bytes.
    const marker = Buffer.from("0609608648016503040201050004 20".replace(/ /g, ""), "hex");
    const at = sig.indexOf(marker);
    expect(at).toBeGreaterThan(0);
    const signed = sig.subarray(at + marker.length, at + marker.length + 32).toString("hex");
    expect(peImageHash(kernel, "sha256").toString("hex")).toBe(signed);
  });

  test.skipIf(noKernel !== null)("the QEMU loader rewrite touches only setup-header loader fields", () => {
    const kernel = readFileSync(kernelPath);
    const patched = qemuPatchedKernel(kernel, 3_000_000, 2048 * 1024 * 1024);
    const changed: number[] = [];
    for (let i = 0; i < kernel.length; i++) if (kernel[i] !== patched[i]) changed.push(i);
    expect(changed.length).toBeGreaterThan(0);
    for (const off of changed) expect(off >= 0x210 && off < 0x230).toBe(true);
    expect(patched[0x210]).toBe(0xb0);
    expect(patched.readUInt32LE(0x21c)).toBe(3_000_000);
    expect(patched.readUInt32LE(0x218) % 4096).toBe(0);
  });

  const ovmf = OVMF;
  test.skipIf(noOvmf !== null)("reads the TDVF metadata of the packaged OVMF build", () => {
    const r = mrtd(ovmf);
    expect(r.value).toMatch(/^[0-9a-f]{96}$/);
    expect(r.sections.map((s) => s.type)).toEqual(expect.arrayContaining(["BFV", "CFV"]));
    const bfv = r.sections.find((s) => s.type === "BFV");
    expect(bfv && bfv.attributes & 1).toBe(1);
  });
});

/**
 * A tiny x86 bzImage stand-in: a PE32+ image (one section) whose first sector carries a Linux setup
 * header (protocol 2.15, loaded high), so both the PE hash and QEMU's header rewrite apply to it.
 */
function tinyKernel(): Buffer {
  const k = Buffer.alloc(0x600);
  k.writeUInt16LE(0x5a4d, 0);
  k.writeUInt32LE(0x40, 0x3c);
  k.writeUInt32LE(0x00004550, 0x40);
  const coff = 0x44;
  k.writeUInt16LE(0x8664, coff);
  k.writeUInt16LE(1, coff + 2);
  k.writeUInt16LE(0xf0, coff + 16);
  const opt = coff + 20;
  k.writeUInt16LE(0x20b, opt);
  k.writeUInt32LE(0x400, opt + 60); // SizeOfHeaders
  k.writeUInt32LE(16, opt + 108); // NumberOfRvaAndSizes
  const sec = opt + 0xf0;
  k.write(".text", sec, "ascii");
  k.writeUInt32LE(0x200, sec + 16);
  k.writeUInt32LE(0x400, sec + 20);
  k.fill(0x90, 0x400, 0x600);
  k.writeUInt32LE(0x53726448, 0x202); // "HdrS"
  k.writeUInt16LE(0x020f, 0x206);
  k[0x211] = 0x01; // LOADED_HIGH
  k.writeUInt32LE(0x7fffffff, 0x22c);
  return k;
}

describe("measurements for the host's exact QEMU (small inputs)", () => {
  function files(): { kernel: string; initrd: string } {
    const kernel = join(dir, "vmlinuz");
    const initrd = join(dir, "initrd.img");
    writeFileSync(kernel, tinyKernel());
    writeFileSync(initrd, Buffer.alloc(100_000, 7));
    return { kernel, initrd };
  }

  test("the TDX QEMU floor is the preflight's", () => {
    expect(MIN_TDX_QEMU).toEqual([...PREFLIGHT_MIN_TDX_QEMU]);
    expect(parseQemuVersion("QEMU emulator version 10.1.2 (qemu-10.1.2-1)")).toEqual([10, 1, 2]);
    expect(parseQemuVersion("10.2")).toEqual([10, 2, 0]);
    expect(parseQemuVersion("ten")).toBeNull();
  });

  test("one RTMR1 value for a TDX-capable QEMU: the listed events replay to it; it follows guest memory", () => {
    const { kernel, initrd } = files();
    const m = measure(kernel, initrd, "console=ttyS0", 2048, "QEMU emulator version 10.1.0");
    expect(m).not.toHaveProperty("rtmr1_candidates");
    expect(m.rtmr1).toMatch(/^[0-9a-f]{96}$/);
    expect(m).toMatchObject({ qemu_version: "10.1.0", memory_mib: 2048, rtmr1_reason: null });
    expect(m.events.rtmr1).toHaveLength(5);
    expect(replay(m.events.rtmr1.map((e) => Buffer.from(e.digest, "hex"))).toString("hex")).toBe(m.rtmr1);
    // the first event is the kernel as QEMU's loader hands it over, not the file as built
    expect(m.events.rtmr1[0]!.digest).not.toBe(peImageHash(tinyKernel(), "sha384").toString("hex"));
    expect(m.events.rtmr1[0]!.digest).toBe(peImageHash(qemuPatchedKernel(tinyKernel(), 100_000, 2048 * 1048576), "sha384").toString("hex"));
    // the initrd is placed below the top of low memory, so a smaller guest gives another RTMR1
    expect(measure(kernel, initrd, "console=ttyS0", 1024, "10.1.0").rtmr1).not.toBe(m.rtmr1);
    // RTMR2 does not depend on the QEMU
    expect(measure(kernel, initrd, "console=ttyS0", 2048, null).rtmr2).toBe(m.rtmr2);
  });

  test("no QEMU named, or one that cannot launch a TD: RTMR1 is null with the reason", () => {
    const { kernel, initrd } = files();
    expect(measure(kernel, initrd, "x", 2048, null)).toMatchObject({ rtmr1: null, rtmr1_reason: expect.stringMatching(/--qemu-version/), events: { rtmr1: [] } });
    expect(measure(kernel, initrd, "x", 2048, "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)")).toMatchObject({
      rtmr1: null,
      rtmr1_reason: "QEMU 7.2.22 cannot launch TDX guests (needs >= 10.1), so there is no RTMR1 to predict for it",
    });
    expect(measure(kernel, initrd, "x", 2048, "latest").rtmr1_reason).toMatch(/"latest" is not a QEMU version/);
  });

  async function buildManifest(extra: Record<string, unknown>): Promise<Record<string, any>> {
    files();
    writeFileSync(join(dir, "cmdline.txt"), "console=ttyS0 ro cvm.image=cvm-test\n");
    writeFileSync(join(dir, "rootfs.img"), "root");
    writeFileSync(join(dir, "rootfs.verity"), "verity");
    const spec = join(dir, "spec.json");
    writeFileSync(spec, JSON.stringify({ out_dir: dir, image_id: "cvm-test", memory_mib: 2048, firmware: null, notes: [], ...extra }));
    await manifest(spec);
    return JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  }

  test("the manifest holds exactly the four registers, rtmr0 null; verifiers fail closed on it unless rtmr0 is waived", async () => {
    const out = await buildManifest({ qemu_version: "10.1.0" });
    const em = out.expected_measurements;
    expect(Object.keys(em)).toEqual(["mrtd", "rtmr0", "rtmr1", "rtmr2"]);
    expect(em).toMatchObject({ mrtd: null, rtmr0: null, rtmr1: expect.stringMatching(/^[0-9a-f]{96}$/), rtmr2: expect.stringMatching(/^[0-9a-f]{96}$/) });
    expect(out.measured_for).toEqual({ qemu_version: "10.1.0", memory_mib: 2048, firmware: null });
    expect(out.notes.join("\n")).toMatch(/mrtd: null: .*--firmware/);
    // what a guest of this image would report, if every computed value is right
    const quoted = { mrtd: "ab".repeat(48), rtmr0: "cd".repeat(48), rtmr1: em.rtmr1, rtmr2: em.rtmr2 };
    const parsed = parseManifest(out);
    expect(compareMeasurements(quoted, parsed)).toMatchObject({ ok: false, unchecked: ["mrtd", "rtmr0"], matched: ["rtmr1", "rtmr2"] });
    expect(compareMeasurements(quoted, parsed, { allowUnchecked: ["mrtd", "rtmr0"] }).ok).toBe(true);
    const old = await buildManifest({ qemu_version: "7.2.22" });
    expect(old.expected_measurements.rtmr1).toBeNull();
    expect(old.notes.join("\n")).toMatch(/rtmr1: null \(unchecked unless waived\): QEMU 7\.2\.22 cannot launch TDX guests/);
  });

  const ovmf = OVMF;
  test.skipIf(noOvmf !== null)("with --firmware, MRTD is computed from the TDVF and recorded with the firmware digest", async () => {
    const out = await buildManifest({ qemu_version: "10.1.0", firmware: ovmf });
    expect(out.expected_measurements.mrtd).toBe(mrtd(ovmf).value);
    expect(out.measured_for.firmware).toMatchObject({ file: ovmf, sha256: sha256(readFileSync(ovmf)) });
  });
});
