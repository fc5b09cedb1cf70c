#!/usr/bin/env node
// Helper for images/build.sh: file-tree listings, the agent's runtime dependency closure,
// TDX boot measurements and the image manifest. Plain ESM so the recipe needs no tsc.
//
//   image-tool.mjs listing <dir> <out-file>         -> prints sha256 of the listing
//   image-tool.mjs agent-deps <node_modules> <js-dir>...  -> package dirs, one per line
//   image-tool.mjs measure <vmlinuz> <initrd> <cmdline-file> [--memory-mib N] [--qemu-version V]
//   image-tool.mjs manifest <spec.json>              -> writes manifest.json (see build.sh)
import { createHash } from "node:crypto";
import { createReadStream, existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const fail = (msg) => {
  throw new Error(`image-tool: ${msg}`);
};

const sha = (alg, data) => createHash(alg).update(data).digest();

async function fileSha256(path) {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk);
  return h.digest("hex");
}

// ---------------------------------------------------------------------------------------------
// Listing: one line per non-directory entry, "<path>\t<mode octal>\t<size>\t<sha256>", sorted
// bytewise by path. Symlinks list their target's length and the sha256 of the target string, so
// a relinked tree changes the digest too. Owner and mtime are not listed: the image fixes both.

// The listing format belongs to the agent, which checks the shipped tree against it at activation
// (guest/setup/openclaw-tree.ts). The image build runs that same compiled code, so the two can
// never drift apart; `make image` builds dist/ first.
const DEFAULT_DIST = process.env.CVM_DIST ?? fileURLToPath(new URL("../../dist", import.meta.url));

export async function listing(dir, outFile, distDir = DEFAULT_DIST) {
  const impl = join(distDir, "guest/setup/openclaw-tree.js");
  if (!existsSync(impl)) fail(`${impl} is missing: run \`npm run build\` before building the image`);
  const { buildTreeListing } = await import(pathToFileURL(impl).href);
  let text;
  try {
    text = await buildTreeListing(dir);
  } catch (err) {
    fail(`unlistable tree: ${err.message}`);
  }
  writeFileSync(outFile, text);
  return sha("sha256", text).toString("hex");
}

// ---------------------------------------------------------------------------------------------
// Agent dependencies: bare import specifiers in the compiled agent, then every installed
// dependency and optional dependency of those packages, resolved the way Node does (nearest
// node_modules up the tree).

function bareImports(jsDir, found) {
  for (const name of readdirSync(jsDir)) {
    const p = join(jsDir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) bareImports(p, found);
    else if (/\.(m|c)?js$/.test(name)) {
      const src = readFileSync(p, "utf8");
      const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\bimport\s+)["']([^"'./][^"']*)["']/g;
      for (const m of src.matchAll(re)) {
        const spec = m[1];
        if (spec.startsWith("node:")) continue;
        const parts = spec.split("/");
        found.add(spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]);
      }
    }
  }
}

export function agentDeps(nodeModules, jsDirs) {
  const roots = new Set(["cbor-x"]);
  for (const d of jsDirs) if (existsSync(d)) bareImports(d, roots);
  const seen = new Set();
  const resolveFrom = (fromRel, name) => {
    // fromRel: package dir relative to nodeModules ("" for the top level)
    let base = fromRel;
    for (;;) {
      const candidate = base ? `${base}/node_modules/${name}` : name;
      if (existsSync(join(nodeModules, candidate, "package.json"))) return candidate;
      if (!base) return null;
      const idx = base.lastIndexOf("/node_modules/");
      base = idx < 0 ? "" : base.slice(0, idx);
    }
  };
  const visit = (rel, optional) => {
    if (seen.has(rel)) return;
    seen.add(rel);
    const pkg = JSON.parse(readFileSync(join(nodeModules, rel, "package.json"), "utf8"));
    for (const [deps, opt] of [
      [pkg.dependencies, false],
      [pkg.optionalDependencies, true],
      [pkg.peerDependencies, true],
    ]) {
      for (const name of Object.keys(deps ?? {})) {
        const r = resolveFrom(rel, name);
        if (r) visit(r, opt);
        else if (!opt && !(pkg.optionalDependencies ?? {})[name] && !(pkg.peerDependenciesMeta ?? {})[name]?.optional && !(pkg.peerDependencies ?? {})[name])
          fail(`${rel} needs ${name}, which is not installed`);
      }
    }
    void optional;
  };
  for (const name of [...roots].sort()) {
    const r = resolveFrom("", name);
    if (!r) fail(`the agent imports ${name}, which is not in ${nodeModules}`);
    visit(r, false);
  }
  return [...seen].sort();
}

// ---------------------------------------------------------------------------------------------
// TDX measurements for a TDVF (OVMF IntelTdx) direct kernel boot.
//
// RTMR registers start at zero; extend(r, d) = SHA-384(r || d).
// RTMR1 (PCR 4/5 in TCG terms): the kernel's PE/COFF (Authenticode-style) SHA-384 as loaded by
// the firmware, then the constant EV_EFI_ACTION / separator events the firmware logs around
// starting the boot option and ExitBootServices.
// RTMR2 (PCR 9): the Linux EFI stub measures the LoadOptions the firmware gave it -- OVMF's QEMU
// loader writes "initrd=initrd " in front of the fw_cfg command line when an initrd is present,
// as UTF-16LE with its NUL -- and then the initrd bytes.

const ZERO48 = Buffer.alloc(48);
const extend = (reg, digest) => sha("sha384", Buffer.concat([reg, digest]));
export const replay = (digests) => digests.reduce(extend, ZERO48);

const RTMR1_TAIL = [
  Buffer.from("Calling EFI Application from Boot Option"),
  Buffer.from([0, 0, 0, 0]),
  Buffer.from("Exit Boot Services Invocation"),
  Buffer.from("Exit Boot Services Returned with Success"),
];

// PE/COFF image hash as edk2's measured-boot code computes it (DxeTpm2MeasureBootLib /
// TdTcg2Dxe): headers minus CheckSum and the Certificate Table directory entry, then section
// raw data in file order, then any bytes after the sections that are not the certificate table.
export function peImageHash(buf, alg) {
  const u16 = (o) => buf.readUInt16LE(o);
  const u32 = (o) => buf.readUInt32LE(o);
  if (u16(0) !== 0x5a4d) throw new Error("not a PE image (no MZ)");
  const pe = u32(0x3c);
  if (u32(pe) !== 0x00004550) throw new Error("not a PE image (no PE signature)");
  const coff = pe + 4;
  const nSections = u16(coff + 2);
  const optSize = u16(coff + 16);
  const opt = coff + 20;
  const magic = u16(opt);
  if (magic !== 0x20b && magic !== 0x10b) throw new Error(`unknown optional header magic ${magic}`);
  const plus = magic === 0x20b;
  const checksumOff = opt + 64;
  const sizeOfHeaders = u32(opt + 60);
  const nRva = u32(opt + (plus ? 108 : 92));
  const dirs = opt + (plus ? 112 : 96);
  const h = createHash(alg);
  let certSize = 0;
  if (nRva > 4) {
    const certDir = dirs + 4 * 8;
    certSize = u32(certDir + 4);
    h.update(buf.subarray(0, checksumOff));
    h.update(buf.subarray(checksumOff + 4, certDir));
    h.update(buf.subarray(certDir + 8, sizeOfHeaders));
  } else {
    h.update(buf.subarray(0, checksumOff));
    h.update(buf.subarray(checksumOff + 4, sizeOfHeaders));
  }
  const sections = [];
  const secTable = opt + optSize;
  for (let i = 0; i < nSections; i++) {
    const s = secTable + i * 40;
    const size = u32(s + 16);
    const ptr = u32(s + 20);
    if (size > 0) sections.push({ ptr, size });
  }
  sections.sort((a, b) => a.ptr - b.ptr);
  let hashed = sizeOfHeaders;
  for (const { ptr, size } of sections) {
    if (ptr + size > buf.length) throw new Error("section beyond end of file");
    h.update(buf.subarray(ptr, ptr + size));
    hashed += size;
  }
  if (buf.length > hashed + certSize) h.update(buf.subarray(hashed, buf.length - certSize));
  return h.digest();
}

// The setup-header fields QEMU's x86 Linux loader writes before handing the kernel to the
// firmware over fw_cfg (QEMU 8.0 and later, q35, no setup_data): loader type, heap, command
// line pointer and the initrd placement, which depends on guest memory and initrd size.
export function qemuPatchedKernel(kernel, initrdSize, memoryBytes) {
  const k = Buffer.from(kernel);
  if (k.readUInt32LE(0x202) !== 0x53726448) throw new Error("no Linux setup header (HdrS)");
  const protocol = k.readUInt16LE(0x206);
  const loadedHigh = protocol >= 0x200 && (k[0x211] & 0x01) !== 0;
  const realAddr = loadedHigh ? 0x10000 : 0x90000;
  const cmdlineAddr = loadedHigh ? 0x20000 : 0x9a000;
  if (protocol >= 0x200) k[0x210] = 0xb0;
  if (protocol >= 0x201) {
    k[0x211] |= 0x80;
    k.writeUInt16LE(cmdlineAddr - realAddr - 0x200, 0x224);
  }
  if (protocol >= 0x202) k.writeUInt32LE(cmdlineAddr, 0x228);
  if (initrdSize > 0) {
    let initrdMax;
    if (protocol >= 0x20c && (k.readUInt16LE(0x236) & 0x2) !== 0) initrdMax = 0xffffffff;
    else if (protocol >= 0x203) initrdMax = k.readUInt32LE(0x22c) || 0x37ffffff;
    else initrdMax = 0x37ffffff;
    const lowmemLimit = memoryBytes >= 0xb0000000 ? 0x80000000 : 0xb0000000;
    const below4g = Math.min(memoryBytes, lowmemLimit);
    const acpiDataSize = 0x28000;
    if (initrdMax >= below4g - acpiDataSize) initrdMax = below4g - acpiDataSize - 1;
    const initrdAddr = Math.floor((initrdMax - initrdSize) / 4096) * 4096;
    k.writeUInt32LE(initrdAddr >>> 0, 0x218);
    k.writeUInt32LE(initrdSize, 0x21c);
  }
  return k;
}

function utf16z(s) {
  return Buffer.concat([Buffer.from(s, "utf16le"), Buffer.alloc(2)]);
}

// The first QEMU that runs TDX guests. host/vmm/tdx-preflight.ts refuses older ones on a TDX host;
// this file is plain ESM and cannot import that, so image-tool.test.ts checks the two agree.
export const MIN_TDX_QEMU = [10, 1];

/** "10.1.0", "10.1" or a `qemu-system-x86_64 --version` banner → [major, minor, micro]; null otherwise. */
export function parseQemuVersion(text) {
  const m = /^(?:QEMU emulator version )?(\d+)\.(\d+)(?:\.(\d+))?(?:[\s(]|$)/.exec(String(text).trim());
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : null;
}

/**
 * RTMR1 for the one QEMU the host runs. Every QEMU that can launch a TD (>= MIN_TDX_QEMU) hands the
 * kernel to TDVF over fw_cfg with its x86 loader's setup-header rewrite (qemuPatchedKernel), which
 * depends on guest memory and initrd size, so the value holds for that QEMU line and that memory
 * size only. For any other QEMU, or none named, RTMR1 stays null: unchecked, so verdicts fail closed.
 */
function rtmr1For(kernel, initrdSize, memoryMiB, qemuVersion) {
  if (qemuVersion === null || qemuVersion === undefined) {
    return { digest: null, reason: "no QEMU version given (build with --qemu-version V or --qemu BINARY of the TDX host)" };
  }
  const v = parseQemuVersion(qemuVersion);
  if (!v) return { digest: null, reason: `"${qemuVersion}" is not a QEMU version` };
  const [maj, min] = MIN_TDX_QEMU;
  if (v[0] < maj || (v[0] === maj && v[1] < min)) {
    return { digest: null, reason: `QEMU ${v.join(".")} cannot launch TDX guests (needs >= ${MIN_TDX_QEMU.join(".")}), so there is no RTMR1 to predict for it` };
  }
  const digest = peImageHash(qemuPatchedKernel(kernel, initrdSize, memoryMiB * 1024 * 1024), "sha384");
  return { digest, qemu: v.join("."), reason: null };
}

export function measure(kernelPath, initrdPath, cmdline, memoryMiB, qemuVersion = null) {
  const kernel = readFileSync(kernelPath);
  const initrd = readFileSync(initrdPath);
  const tail = RTMR1_TAIL.map((e) => sha("sha384", e));
  const r1 = rtmr1For(kernel, initrd.length, memoryMiB, qemuVersion);
  const loadOptions = `initrd=initrd ${cmdline}`;
  const rtmr2Events = [sha("sha384", utf16z(loadOptions)), sha("sha384", initrd)];
  const hex = (b) => b.toString("hex");
  return {
    rtmr1: r1.digest ? hex(replay([r1.digest, ...tail])) : null,
    rtmr1_reason: r1.reason,
    qemu_version: r1.qemu ?? null,
    memory_mib: memoryMiB,
    rtmr2: hex(replay(rtmr2Events)),
    events: {
      rtmr1: r1.digest
        ? [
            { event: `EV_EFI_BOOT_SERVICES_APPLICATION kernel (QEMU ${r1.qemu} loader header, ${memoryMiB} MiB guest)`, digest: hex(r1.digest) },
            ...RTMR1_TAIL.map((e, i) => ({
              event: i === 1 ? "EV_SEPARATOR" : `EV_EFI_ACTION ${e.toString()}`,
              digest: hex(tail[i]),
            })),
          ]
        : [],
      rtmr2: [
        { event: `EV_EVENT_TAG LoadOptions "${loadOptions}" (UTF-16LE, NUL-terminated)`, digest: hex(rtmr2Events[0]) },
        { event: "EV_EVENT_TAG Linux initrd", digest: hex(rtmr2Events[1]) },
      ],
    },
  };
}

// ---------------------------------------------------------------------------------------------
// MRTD from a TDVF firmware image: the TDX module's SHA-384 over TDH.MEM.PAGE.ADD and
// TDH.MR.EXTEND records for the sections the TDVF metadata lists (TDVF design guide, section
// "TD Measurement"). Each record is 128 bytes: the operation name, the GPA, zero padding;
// MR.EXTEND records are followed by the 256 measured bytes.

const TDVF_SECTION_TYPES = ["BFV", "CFV", "TD_HOB", "TempMem", "PermMem", "Payload", "PayloadParam", "TD_INFO"];

function tdvfMetadata(fw) {
  // The metadata offset sits in the OVMF GUIDed table at the end of the image, under
  // e47a6535-984a-4798-865e-4685a7bf8ec2 (TDX metadata offset GUID).
  const tableGuid = Buffer.from("de82b596b21ff745baeaa366c55a082d".match(/../g).map((x) => parseInt(x, 16))); // 96b582de-1fb2-45f7-baea-a366c55a082d
  const tdxGuid = Buffer.from("35657ae44a989847865e4685a7bf8ec2".match(/../g).map((x) => parseInt(x, 16)));
  const end = fw.length - 0x20;
  if (!fw.subarray(end - 16, end).equals(tableGuid)) throw new Error("no OVMF GUIDed table footer");
  const tableLen = fw.readUInt16LE(end - 18);
  let p = end - 18;
  const start = end - tableLen;
  while (p > start) {
    const guid = fw.subarray(p - 16, p);
    const len = fw.readUInt16LE(p - 18);
    if (len < 18) break;
    if (guid.equals(tdxGuid)) {
      const off = fw.length - fw.readUInt32LE(p - 18 - 4);
      return off;
    }
    p -= len;
  }
  throw new Error("no TDX metadata offset in the GUIDed table");
}

export function mrtd(fwPath) {
  const fw = readFileSync(fwPath);
  const off = tdvfMetadata(fw);
  if (fw.subarray(off, off + 4).toString() !== "TDVF") throw new Error("TDVF metadata signature missing");
  const count = fw.readUInt32LE(off + 12);
  const h = createHash("sha384");
  const record = (op, gpa) => {
    const b = Buffer.alloc(128);
    b.write(op, 0, "ascii");
    b.writeBigUInt64LE(gpa, 16);
    return b;
  };
  const sections = [];
  for (let i = 0; i < count; i++) {
    const s = off + 16 + i * 32;
    sections.push({
      dataOffset: fw.readUInt32LE(s),
      rawSize: fw.readUInt32LE(s + 4),
      gpa: fw.readBigUInt64LE(s + 8),
      memSize: fw.readBigUInt64LE(s + 16),
      type: fw.readUInt32LE(s + 24),
      attributes: fw.readUInt32LE(s + 28),
    });
  }
  // KVM adds each page with TDH.MEM.PAGE.ADD and, for sections with the MR.EXTEND attribute,
  // immediately extends that page's 16 chunks (one pass, as KVM_TDX_INIT_MEM_REGION does).
  for (const sec of sections) {
    const pages = Number(sec.memSize / 4096n);
    const content = Buffer.alloc(Number(sec.memSize));
    fw.copy(content, 0, sec.dataOffset, sec.dataOffset + Math.min(sec.rawSize, Number(sec.memSize)));
    for (let pg = 0; pg < pages; pg++) {
      const gpa = sec.gpa + BigInt(pg * 4096);
      h.update(record("MEM.PAGE.ADD", gpa));
      if (sec.attributes & 1) {
        for (let o = 0; o < 4096; o += 256) {
          h.update(record("MR.EXTEND", gpa + BigInt(o)));
          h.update(content.subarray(pg * 4096 + o, pg * 4096 + o + 256));
        }
      }
    }
  }
  return {
    value: h.digest("hex"),
    sections: sections.map((s) => ({ ...s, type: TDVF_SECTION_TYPES[s.type] ?? s.type, gpa: `0x${s.gpa.toString(16)}`, memSize: Number(s.memSize) })),
  };
}

// ---------------------------------------------------------------------------------------------

export async function manifest(specPath) {
  const spec = JSON.parse(readFileSync(specPath, "utf8"));
  const dir = spec.out_dir;
  const cmdline = readFileSync(join(dir, "cmdline.txt"), "utf8").replace(/\n$/, "");
  const m = measure(join(dir, "vmlinuz"), join(dir, "initrd.img"), cmdline, spec.memory_mib, spec.qemu_version ?? null);
  let mrtdValue = null;
  let firmware = null;
  const notes = [...spec.notes];
  if (spec.firmware) {
    firmware = { file: spec.firmware, sha256: await fileSha256(spec.firmware) };
    try {
      const r = mrtd(spec.firmware);
      mrtdValue = r.value;
      firmware.tdvf_sections = r.sections;
      notes.push(
        "mrtd: computed from the TDVF metadata of --firmware (PAGE.ADD of every listed page, MR.EXTEND of sections with the extend attribute); not yet checked against a quote from TDX hardware.",
      );
    } catch (e) {
      notes.push(`mrtd: null: --firmware ${spec.firmware} has no usable TDVF metadata (${e.message}).`);
    }
  } else {
    notes.push("mrtd: null: it measures the firmware (TDVF), which is not part of this image; rebuild with --firmware FILE.");
  }
  notes.push(
    "rtmr2: SHA-384 replay of the two events the Linux EFI stub logs under edk2 (OVMF) direct kernel boot: LoadOptions = 'initrd=initrd ' + cmdline.txt as UTF-16LE with NUL, then the initrd file.",
    m.rtmr1
      ? `rtmr1: the PE image hash of the kernel as QEMU ${m.qemu_version} hands it to TDVF (its loader's setup-header rewrite for a ${spec.memory_mib} MiB guest), then the four constant TDVF events; valid for that QEMU line and CVM_VM_MEMORY_MIB=${spec.memory_mib} only; not yet checked against a quote from TDX hardware.`
      : `rtmr1: null (unchecked unless waived): ${m.rtmr1_reason}.`,
    "rtmr0: null (unchecked unless waived): it measures TDVF configuration (CFV, ACPI tables, boot variables) of the host, not this image.",
    "rtmr3: empty at boot; cvm-agent extends it at run time and reports the event log.",
  );
  const out = {
    image_id: spec.image_id,
    created: spec.created,
    debian_suite: spec.debian_suite,
    kernel_package: spec.kernel_package,
    kernel_version: spec.kernel_version,
    digests: {
      kernel: await fileSha256(join(dir, "vmlinuz")),
      initrd: await fileSha256(join(dir, "initrd.img")),
      cmdline: sha("sha256", readFileSync(join(dir, "cmdline.txt"))).toString("hex"),
      rootfs: await fileSha256(join(dir, "rootfs.img")),
      verity: await fileSha256(join(dir, "rootfs.verity")),
    },
    cmdline,
    verity: spec.verity,
    openclaw: spec.openclaw,
    node_version: spec.node_version,
    agent_present: spec.agent_present,
    agent_digest: spec.agent_digest,
    // Only the four registers a verifier compares; how they were computed is beside them, so a
    // verifier never mistakes a build note for an expected value.
    expected_measurements: { mrtd: mrtdValue, rtmr0: null, rtmr1: m.rtmr1, rtmr2: m.rtmr2 },
    measured_for: { qemu_version: m.qemu_version, memory_mib: spec.memory_mib, firmware },
    measurement_events: m.events,
    inputs: spec.inputs,
    notes,
  };
  writeFileSync(join(dir, "manifest.json"), `${JSON.stringify(out, null, 2)}\n`);
}

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  switch (cmd) {
    case "listing":
      if (args.length !== 2) fail("usage: listing <dir> <out-file>");
      process.stdout.write(`${await listing(args[0], args[1])}\n`);
      break;
    case "agent-deps":
      if (args.length < 2) fail("usage: agent-deps <node_modules> <js-dir>...");
      process.stdout.write(agentDeps(args[0], args.slice(1)).map((d) => `${d}\n`).join(""));
      break;
    case "measure": {
      if (args.length < 3) fail("usage: measure <vmlinuz> <initrd> <cmdline-file> [--memory-mib N] [--qemu-version V]");
      const i = args.indexOf("--memory-mib");
      const mem = i >= 0 ? Number(args[i + 1]) : 2048;
      const q = args.indexOf("--qemu-version");
      const cmdline = readFileSync(args[2], "utf8").replace(/\n$/, "");
      process.stdout.write(`${JSON.stringify(measure(args[0], args[1], cmdline, mem, q >= 0 ? args[q + 1] : null), null, 2)}\n`);
      break;
    }
    case "mrtd":
      process.stdout.write(`${JSON.stringify(mrtd(args[0]), null, 2)}\n`);
      break;
    case "manifest":
      await manifest(args[0]);
      break;
    default:
      fail(`unknown command ${cmd ?? "(none)"}`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    process.stderr.write(`${e.message}\n`);
    process.exit(1);
  });
}
