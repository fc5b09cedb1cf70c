import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { parseTreeListing } from "../../guest/setup/openclaw-tree.js";
import { agentDeps, listing, mrtd, peImageHash, qemuPatchedKernel, replay } from "./image-tool.mjs";

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
  const haveKernel = existsSync(kernelPath);
  if (!haveKernel) console.warn(`skipping kernel image checks: ${kernelPath} not built (run images/build.sh)`);

  test.skipIf(!haveKernel)("the PE image hash equals the Authenticode digest Debian signed into the kernel", () => {
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

  test.skipIf(!haveKernel)("the QEMU loader rewrite touches only setup-header loader fields", () => {
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

  const ovmf = "/usr/share/ovmf/OVMF.fd";
  test.skipIf(!existsSync(ovmf))("reads the TDVF metadata of the packaged OVMF build", () => {
    const r = mrtd(ovmf);
    expect(r.value).toMatch(/^[0-9a-f]{96}$/);
    expect(r.sections.map((s) => s.type)).toEqual(expect.arrayContaining(["BFV", "CFV"]));
    const bfv = r.sections.find((s) => s.type === "BFV");
    expect(bfv && bfv.attributes & 1).toBe(1);
  });
});
