import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";

/*
 * The OpenClaw tree listing: one line per entry under the install directory, sorted by path (byte
 * order), fields separated by a tab, each line ending in "\n":
 *
 *   f <TAB> mode <TAB> size <TAB> sha256(content) <TAB> relative/path     regular file
 *   l <TAB> mode <TAB> size <TAB> sha256(target)  <TAB> relative/path     symlink (size = target length)
 *   d <TAB> mode <TAB> 0    <TAB> -               <TAB> relative/path     directory
 *
 * mode is the permission bits in 4-digit octal. The tree digest is SHA-256 (hex) of the listing
 * file's bytes. The image build writes the listing into the image and the digest into
 * /etc/cvm/openclaw.json; the agent verifies the listing against the digest and the tree against the
 * listing.
 *
 * Why spot checks suffice at runtime: the image root is dm-verity protected and its root hash is on the
 * measured kernel command line, so every block the kernel returns has already been checked against the
 * measured hash tree; a modified byte reads as an I/O error, not as different content. What the agent
 * must still establish is that the tree *it is about to run* is the one the manifest names (a build
 * mistake, or an unprotected development image, would otherwise go unnoticed). The listing's digest
 * proves the listing; stat of every entry proves the shape of the tree; hashing a deterministic sample
 * of files (always including the package manifest and the entry point) proves the listing describes
 * these bytes. `full` mode hashes everything, for development images without dm-verity.
 */

export interface TreeEntry {
  kind: "f" | "l" | "d";
  mode: number;
  size: number;
  sha256: string;
  path: string;
}

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

function formatEntry(e: TreeEntry): string {
  return [e.kind, e.mode.toString(8).padStart(4, "0"), String(e.size), e.sha256, e.path].join("\t");
}

/** Builds the listing text for a directory (used by the image build and by tests). */
export async function buildTreeListing(dir: string): Promise<string> {
  const entries: TreeEntry[] = [];
  async function walk(rel: string): Promise<void> {
    const names = (await readdir(join(dir, rel))).sort();
    for (const name of names) {
      if (/[\t\n]/.test(name)) throw new Error(`file name with tab or newline in tree: ${JSON.stringify(join(rel, name))}`);
      const r = rel ? `${rel}/${name}` : name;
      const abs = join(dir, r);
      const st = await lstat(abs);
      const mode = st.mode & 0o7777;
      if (st.isSymbolicLink()) {
        const target = await readlink(abs);
        entries.push({ kind: "l", mode, size: Buffer.byteLength(target), sha256: sha256(target), path: r });
      } else if (st.isDirectory()) {
        entries.push({ kind: "d", mode, size: 0, sha256: "-", path: r });
        await walk(r);
      } else if (st.isFile()) {
        entries.push({ kind: "f", mode, size: st.size, sha256: await sha256File(abs), path: r });
      } else {
        throw new Error(`unsupported file type in tree: ${r}`);
      }
    }
  }
  await walk("");
  entries.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  return entries.map((e) => formatEntry(e) + "\n").join("");
}

export function parseTreeListing(text: string): TreeEntry[] {
  if (text.length > 0 && !text.endsWith("\n")) throw new Error("listing does not end with a newline");
  const lines = text.split("\n").slice(0, -1);
  return lines.map((line, i) => {
    const f = line.split("\t");
    if (f.length !== 5) throw new Error(`listing line ${i + 1} has ${f.length} fields`);
    const [kind, mode, size, hash, path] = f as [string, string, string, string, string];
    if (kind !== "f" && kind !== "l" && kind !== "d") throw new Error(`listing line ${i + 1}: unknown kind ${kind}`);
    if (!/^[0-7]{4}$/.test(mode) || !/^\d+$/.test(size)) throw new Error(`listing line ${i + 1}: bad mode or size`);
    if (kind === "d" ? hash !== "-" : !/^[0-9a-f]{64}$/.test(hash)) throw new Error(`listing line ${i + 1}: bad digest`);
    if (!path || path.startsWith("/") || path.split("/").some((s) => s === ".." || s === "." || s === "")) {
      throw new Error(`listing line ${i + 1}: bad path`);
    }
    return { kind, mode: parseInt(mode, 8), size: Number(size), sha256: hash, path };
  });
}

export class TreeMismatch extends Error {
  override name = "TreeMismatch";
}

export interface VerifyOptions {
  mode: "spot" | "full";
  /** Paths (relative) that are always hashed. */
  alwaysHash: string[];
  /** Number of additional files hashed in spot mode. */
  sampleSize: number;
}

/**
 * Verifies `dir` against the listing at `listingPath` whose SHA-256 must be `expectedDigest`.
 * Throws TreeMismatch with the first discrepancy.
 */
export async function verifyTree(dir: string, listingPath: string, expectedDigest: string, opts: VerifyOptions): Promise<{ entries: number; hashed: number }> {
  const listing = await readFile(listingPath);
  const digest = sha256(listing);
  if (digest !== expectedDigest) throw new TreeMismatch(`tree listing digest ${digest} does not match the manifest's ${expectedDigest}`);
  const entries = parseTreeListing(listing.toString("utf8"));
  for (const e of entries) {
    let st;
    try {
      st = await lstat(join(dir, e.path));
    } catch {
      throw new TreeMismatch(`${e.path} is listed but missing`);
    }
    const kindOk = e.kind === "f" ? st.isFile() : e.kind === "l" ? st.isSymbolicLink() : st.isDirectory();
    if (!kindOk) throw new TreeMismatch(`${e.path} has the wrong file type`);
    if ((st.mode & 0o7777) !== e.mode) throw new TreeMismatch(`${e.path} has mode ${(st.mode & 0o7777).toString(8)}, listed ${e.mode.toString(8)}`);
    if (e.kind === "f" && st.size !== e.size) throw new TreeMismatch(`${e.path} has size ${st.size}, listed ${e.size}`);
  }
  const files = entries.filter((e) => e.kind !== "d");
  let toHash: TreeEntry[];
  if (opts.mode === "full") toHash = files;
  else {
    const chosen = new Set<TreeEntry>(files.filter((e) => opts.alwaysHash.includes(e.path)));
    for (const p of opts.alwaysHash) if (!files.some((e) => e.path === p)) throw new TreeMismatch(`${p} is not in the listing`);
    // Deterministic per digest, so a failure reproduces; different images sample different files.
    for (let i = 0; chosen.size < Math.min(files.length, opts.alwaysHash.length + opts.sampleSize) && i < files.length * 4; i++) {
      const n = parseInt(sha256(`${expectedDigest}:${i}`).slice(0, 12), 16);
      chosen.add(files[n % files.length]!);
    }
    toHash = [...chosen];
  }
  for (const e of toHash) {
    const abs = join(dir, e.path);
    const actual = e.kind === "l" ? sha256(await readlink(abs)) : await sha256File(abs);
    if (actual !== e.sha256) throw new TreeMismatch(`${e.path} content does not match the listing`);
  }
  return { entries: entries.length, hashed: toHash.length };
}
