/**
 * `make verifier`'s package as a tenant gets it: packed by scripts/pack-verifier.mjs, installed with
 * `npm install -g --prefix` offline (it has no dependencies to fetch) into a directory from which the
 * repository's node_modules cannot be reached, and run as an unprivileged user (nobody, when the test
 * runs as root): it must need nothing but Node.
 */
import { execFile } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { FIXTURES_DIR, loadFixture } from "../../shared/tdx/test/fixtures.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { FakeDriver } from "../support/fake-driver.js";
import { prerequisites } from "../support/prerequisites.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { until } from "../support/waiting.js";

const execP = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const missing = prerequisites("cvm-verify package", { tools: [["npm", ["--version"]]], files: ["/usr/bin/setpriv"] });

describe.skipIf(missing !== null)("cvm-verify as a package (make verifier)", () => {
  const dir = tempDir("cvm-verify-pkg-");
  const prefix = join(dir.path, "prefix");
  const bin = join(prefix, "bin", "cvm-verify");
  let tgz = "";
  let sha = "";
  const f = loadFixture("tdx-v4-uptodate");
  let daemon: TestDaemon;

  /** The installed bin as an unprivileged tenant: nobody when we are root, with only Node on PATH. */
  async function tenantRun(args: string[], env: Record<string, string> = {}) {
    const asNobody = process.getuid?.() === 0 ? ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : [];
    const argv = [...asNobody, bin, ...args];
    try {
      const r = await execP(argv[0]!, argv.slice(1), { cwd: dir.path, env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, HOME: dir.path, ...env }, timeout: 60_000 });
      return { code: 0, ...r };
    } catch (e) {
      const x = e as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof x.code === "number" ? x.code : -1, stdout: x.stdout ?? "", stderr: x.stderr ?? "" };
    }
  }

  beforeAll(async () => {
    const { stdout } = await execP(process.execPath, [join(ROOT, "scripts/pack-verifier.mjs"), "--out", join(dir.path, "out")], { cwd: ROOT, timeout: 120_000 });
    [tgz, sha] = stdout.split("\n") as [string, string];
    for (const file of ["quote.bin", "collateral.json"]) copyFileSync(join(FIXTURES_DIR, f.name, file), join(dir.path, file));
    await execP("npm", ["install", "-g", "--prefix", prefix, "--offline", "--no-audit", "--no-fund", tgz], { cwd: dir.path, timeout: 120_000 });
    chmodSync(dir.path, 0o755);
  }, 180_000);
  afterAll(async () => {
    await daemon?.close();
    dir.remove();
  });

  test("the tarball: one bundled file, a README, a package.json without dependencies or scripts; packing twice gives the same bytes", async () => {
    const { stdout } = await execP("tar", ["tzf", tgz]);
    expect(stdout.split("\n").filter(Boolean).sort()).toEqual(["package/README.md", "package/cvm-verify.mjs", "package/package.json"]);
    const pkg = JSON.parse(readFileSync(join(dir.path, "out/cvm-verify/package.json"), "utf8"));
    expect(pkg).toMatchObject({ name: "cvm-verify", bin: { "cvm-verify": "cvm-verify.mjs" } });
    expect(pkg.dependencies ?? {}).toEqual({});
    expect(pkg.scripts).toBeUndefined();
    const again = await execP(process.execPath, [join(ROOT, "scripts/pack-verifier.mjs"), "--out", join(dir.path, "again")], { cwd: dir.path, timeout: 120_000 });
    expect(sha).toMatch(/^sha256 [0-9a-f]{64}$/);
    expect(again.stdout.split("\n")[1]).toBe(sha);
  });

  test("installed, it runs unprivileged outside the repository: --help, and an offline check of an Intel fixture", async () => {
    expect(existsSync(bin)).toBe(true);
    const help = await tenantRun(["--api", "http://x", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/cvm-verify --api URL --instance NAME --manifest FILE/);
    const r = await tenantRun(["--quote", "quote.bin", "--collateral", "collateral.json", "--at", String(f.expected.at_unix), "--json"]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, status: "UpToDate" });
  });

  test("tenant mode against a real cvmd whose instance has no TDX: exit 2, the reason, known_hosts untouched", async () => {
    const driver = new FakeDriver(); // no quoteFor: it answers as a guest without TDX does
    daemon = await startTestDaemon({ dataDir: join(dir.path, "data"), driver });
    const { apiKey } = await daemon.tenant("acme");
    const kp = sshKeyPair("ed25519");
    writeFileSync(join(dir.path, "id_ed25519.pub"), kp.public + "\n", { mode: 0o644 });
    writeFileSync(join(dir.path, "manifest.json"), JSON.stringify({ expected_measurements: {} }), { mode: 0o644 });
    writeFileSync(join(dir.path, "known_hosts"), "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n", { mode: 0o666 });
    const created = await daemon.fetch("/v1/instances", { key: apiKey, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: kp.public }) });
    const name = created.body.data.name as string;
    await until(() => daemon.fetch(`/v1/instances/${name}`, { key: apiKey }), (x) => x.body.data.status === "ready");
    const before = readFileSync(join(dir.path, "known_hosts"), "utf8");
    const r = await tenantRun(
      ["--api", daemon.url, "--instance", name, "--manifest", "manifest.json", "--collateral", "collateral.json", "--ssh-key", "id_ed25519.pub", "--known-hosts", "known_hosts"],
      { CA_API_KEY: apiKey },
    );
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    expect(r.stderr).toBe(`cvm-verify: no TDX: instance ${name} cannot attest (test double: no TDX); nothing written\n`);
    expect(readFileSync(join(dir.path, "known_hosts"), "utf8")).toBe(before);
  });
});
