#!/usr/bin/env node
/**
 * `make verifier`: cvm-verify as a package a tenant installs on a laptop with Node and nothing else.
 * One file bundled by esbuild from guest/verify/bin.ts (its only dependencies, @peculiar/x509 and
 * reflect-metadata, are pure JavaScript), a package.json with no dependencies and no install scripts,
 * packed by `npm pack` (which fixes file times, so equal sources give an equal tarball).
 *
 *   node scripts/pack-verifier.mjs [--out DIR]     (default DIR: dist)
 *
 * Writes DIR/cvm-verify/ (the package) and DIR/cvm-verify-<version>.tgz; prints the tarball's path
 * and sha256. Needs the repository's node_modules (`npm ci --ignore-scripts` is enough), not root.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { build } from "esbuild";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({ options: { out: { type: "string", default: join(ROOT, "dist") } } });
const out = resolve(values.out);
const pkgDir = join(out, "cvm-verify");
const root = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));

rmSync(pkgDir, { recursive: true, force: true });
mkdirSync(pkgDir, { recursive: true });
await build({
  entryPoints: [join(ROOT, "guest/verify/bin.ts")],
  outfile: join(pkgDir, "cvm-verify.mjs"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: `node${root.engines.node.replace(/^>=/, "")}`,
  // Readable on purpose: a tenant may read what it runs. No source maps: paths would name this machine.
  minify: false,
  legalComments: "inline",
  logLevel: "warning",
  // Module comments name paths relative to this: the repository, wherever it is checked out.
  absWorkingDir: ROOT,
});
writeFileSync(
  join(pkgDir, "package.json"),
  JSON.stringify(
    {
      name: "cvm-verify",
      version: root.version,
      description: "Verify a cvm instance's TDX attestation from your own machine, then trust its SSH host key",
      type: "module",
      bin: { "cvm-verify": "cvm-verify.mjs" },
      files: ["cvm-verify.mjs", "README.md"],
      engines: root.engines,
    },
    null,
    2,
  ) + "\n",
);
writeFileSync(
  join(pkgDir, "README.md"),
  `# cvm-verify ${root.version}

Checks a cvm instance's TDX quote from your own machine through cvmd's API (your nonce, DCAP to
Intel's root, REPORTDATA over the SSH host keys, your image manifest, the RTMR3 log, your SSH key)
and only then writes its SSH host key into known_hosts. No dependencies, no native code.

    npm install -g ./cvm-verify-${root.version}.tgz
    cvm-verify --api "$API_BASE" --instance NAME --manifest manifest.json --pccs https://api.trustedservices.intel.com --known-hosts ~/.ssh/known_hosts
    ssh -o StrictHostKeyChecking=yes -p PORT azureuser@HOST

\`cvm-verify --api URL --help\` lists the options; exit 0 verified, 1 not (nothing written), 2 could not run.
`,
);
const tgzName = execFileSync("npm", ["pack", "--silent", "--pack-destination", out], { cwd: pkgDir, encoding: "utf8" }).trim().split("\n").pop();
const tgz = join(out, tgzName);
const sha = createHash("sha256").update(readFileSync(tgz)).digest("hex");
console.log(`${tgz}\nsha256 ${sha}`);
