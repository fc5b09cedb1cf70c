import { createHash } from "node:crypto";
import { appendFile, chmod, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { buildTreeListing, parseTreeListing, TreeMismatch, verifyTree } from "./openclaw-tree.js";

let dir: string;
let tree: string;
let listingPath: string;
let digest: string;
const opts = { mode: "spot" as const, alwaysHash: ["node_modules/openclaw/openclaw.mjs"], sampleSize: 2 };

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "oc-tree-"));
  tree = join(dir, "opt");
  await mkdir(join(tree, "node_modules/openclaw/dist"), { recursive: true });
  await writeFile(join(tree, "node_modules/openclaw/package.json"), '{"name":"openclaw"}');
  await writeFile(join(tree, "node_modules/openclaw/openclaw.mjs"), "console.log(1)\n");
  await chmod(join(tree, "node_modules/openclaw/openclaw.mjs"), 0o755);
  for (let i = 0; i < 20; i++) await writeFile(join(tree, `node_modules/openclaw/dist/f${i}.js`), `export const x = ${i};\n`);
  await symlink("openclaw/openclaw.mjs", join(tree, "node_modules/.bin-openclaw"));
  const listing = await buildTreeListing(tree);
  listingPath = join(dir, "listing");
  await writeFile(listingPath, listing);
  digest = createHash("sha256").update(listing).digest("hex");
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe("OpenClaw tree listing", () => {
  test("listing is sorted, typed and round-trips", async () => {
    const entries = parseTreeListing(await buildTreeListing(tree));
    expect(entries.map((e) => e.path)).toEqual([...entries.map((e) => e.path)].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    expect(entries.find((e) => e.path === "node_modules/openclaw/openclaw.mjs")).toMatchObject({ kind: "f", mode: 0o755, size: 15 });
    expect(entries.find((e) => e.path === "node_modules/.bin-openclaw")).toMatchObject({ kind: "l" });
    expect(entries.find((e) => e.path === "node_modules/openclaw/dist")).toMatchObject({ kind: "d", sha256: "-" });
  });

  test("an untouched tree verifies in spot and full mode", async () => {
    expect(await verifyTree(tree, listingPath, digest, opts)).toMatchObject({ entries: 26, hashed: 3 });
    expect((await verifyTree(tree, listingPath, digest, { ...opts, mode: "full" })).hashed).toBe(23);
  });

  test.each([
    ["listing digest", async () => void (await appendFile(listingPath, "")) , "0".repeat(64), /listing digest/],
    ["entry point content", async () => appendFile(join(tree, "node_modules/openclaw/openclaw.mjs"), "x"), null, /size|content/],
    ["mode", async () => chmod(join(tree, "node_modules/openclaw/openclaw.mjs"), 0o777), null, /mode/],
    ["missing file", async () => rm(join(tree, "node_modules/openclaw/dist/f3.js")), null, /missing/],
    ["same-size edit of the entry point", async () => writeFile(join(tree, "node_modules/openclaw/openclaw.mjs"), "console.log(2)\n"), null, /content/],
  ])("detects a change of %s", async (_n, mutate, expected, reason) => {
    await mutate();
    await expect(verifyTree(tree, listingPath, expected ?? digest, opts)).rejects.toThrow(TreeMismatch);
    await expect(verifyTree(tree, listingPath, expected ?? digest, opts)).rejects.toThrow(reason);
  });

  test("rejects listings with path traversal or bad fields", () => {
    expect(() => parseTreeListing("f\t0644\t1\t" + "a".repeat(64) + "\t../etc/passwd\n")).toThrow(/bad path/);
    expect(() => parseTreeListing("f\t0644\t1\t" + "a".repeat(64) + "\t/abs\n")).toThrow(/bad path/);
    expect(() => parseTreeListing("x\t0644\t1\t-\tp\n")).toThrow(/unknown kind/);
    expect(() => parseTreeListing("f\t0644\t1\tzz\tp\n")).toThrow(/bad digest/);
    expect(() => parseTreeListing("f\t0644\t1\t" + "a".repeat(64) + "\tp")).toThrow(/newline/);
  });
});
