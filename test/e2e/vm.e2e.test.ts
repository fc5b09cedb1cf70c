import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run } from "../../shared/util/run.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd, type CvmdProcess } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { vmHostEnv } from "../support/vm-host.js";
import { expectTenantVerifyNoTdx } from "../support/tenant-verify.js";
import { FIXTURES_DIR } from "../../shared/tdx/test/fixtures.js";

/**
 * The product's heartbeat, for real: cvmd with the QEMU driver (plain profile, TCG here) boots the
 * measured image, the contract's quickstart runs verbatim to `ready`, the tenant logs in over SSH
 * as azureuser, cvmd is killed with SIGKILL and restarted without losing the guest, and DELETE
 * leaves no QEMU, tap or rule behind. One VM serves every check: boots are minutes under TCG.
 * It fails (does not skip) when QEMU or the image is missing: `make test` builds the image first.
 */
const execP = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const IMAGE_DIR = process.env.CVM_E2E_IMAGE_DIR ?? join(ROOT, "images/out/current");
const QUICKSTART = join(ROOT, "test/quickstart/quickstart.sh");

function quickstart(part: "create" | "delete", env: Record<string, string>, stdin = ""): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn("bash", [QUICKSTART], { env: { PATH: process.env.PATH!, ...env, QUICKSTART_PART: part }, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.stderr.on("data", (c: Buffer) => (out += c.toString()));
    child.stdin.end(stdin);
    child.on("exit", (code) => resolve({ code: code ?? -1, out }));
  });
}

async function qemuPids(instanceId: string): Promise<number[]> {
  const { stdout } = await execP("pgrep", ["-f", `qemu-system-x86_64.*${instanceId}`]).catch(() => ({ stdout: "" }));
  return stdout.split("\n").filter(Boolean).map(Number);
}

describe("a real VM from create to SSH to delete (QEMU, TCG)", () => {
  const dir = tempDir("cvme2e-");
  const data = join(dir.path, "d");
  const home = join(dir.path, "home");
  let host: ReturnType<typeof vmHostEnv> | undefined;
  let env: Record<string, string>;
  let cvmd: CvmdProcess | undefined;
  let key = "";
  let name = "";
  let instanceId = "";
  let qsEnv: Record<string, string>;

  beforeAll(async () => {
    expect(existsSync(join(IMAGE_DIR, "manifest.json")), `no guest image at ${IMAGE_DIR}: run \`make image\``).toBe(true);
    const manifest = JSON.parse(readFileSync(join(IMAGE_DIR, "manifest.json"), "utf8")) as { agent_present?: boolean };
    expect(manifest.agent_present, "the image was built without cvm-agent (run npm run build, then make image)").toBe(true);
    host = vmHostEnv(data, IMAGE_DIR, `e${process.pid.toString(36)}`, 79);
    env = host.env;
    cvmd = await startCvmd(env);
    key = JSON.parse((await cvmctl(["tenant", "create", "acme", "--json"], env)).stdout).api_key;

    const kp = sshKeyPair("ed25519");
    mkdirSync(join(home, ".ssh"), { recursive: true, mode: 0o700 });
    writeFileSync(join(home, ".ssh", "id_ed25519"), kp.private, { mode: 0o600 });
    writeFileSync(join(home, ".ssh", "id_ed25519.pub"), kp.public + "\n");
    // Stands in for DNS (its own issue): the hostname's first label is looked up in the API, and
    // the connection goes where the record's `ssh` field says.
    writeFileSync(
      join(home, ".ssh", "config"),
      [
        "Host *.cvm.localhost",
        "  User azureuser",
        "  StrictHostKeyChecking accept-new",
        `  UserKnownHostsFile ${join(home, ".ssh", "known_hosts")}`,
        "  BatchMode yes",
        "  ConnectTimeout 30",
        `  ProxyCommand sh -c 'exec socat - TCP:$(curl -sS -H "Authorization: Bearer $CA_API_KEY" "$API_BASE/v1/instances/$(echo %h | cut -d. -f1)" | jq -r ".data.ssh.host + \\":\\" + (.data.ssh.port|tostring)")'`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    // ssh reads its configuration from the passwd home, not $HOME: a wrapper first on PATH hands it
    // this test's file, so the quickstart's own `ssh -i ~/.ssh/id_ed25519 "$INSTANCE_HOSTNAME"` runs as written.
    mkdirSync(join(home, "bin"), { recursive: true });
    writeFileSync(join(home, "bin", "ssh"), `#!/bin/sh\nexec /usr/bin/ssh -F "${join(home, ".ssh", "config")}" "$@"\n`, { mode: 0o755 });
    qsEnv = { HOME: home, PATH: `${join(home, "bin")}:${process.env.PATH}`, API_BASE: cvmd.url, TENANT_SLUG: "acme", CA_API_KEY: key };
  });

  afterAll(async () => {
    await cvmd?.kill("SIGTERM");
    // Leave nothing behind even if a step failed: guests, namespace, host table.
    if (instanceId) for (const pid of await qemuPids(instanceId)) process.kill(pid, "SIGKILL");
    await host?.cleanup();
    dir.remove();
  });

  it("runs the quickstart verbatim to ready and logs in as azureuser with OpenClaw running", { timeout: 30 * 60_000 }, async () => {
    const remote = [
      "echo USER=$(id -un)",
      "stat -c 'KEYFILE=%a %U' ~/.ssh/authorized_keys",
      "echo OPENCLAW=$(systemctl is-active cvm-openclaw.service)",
      // The image carries no curl; its pinned Node has fetch.
      `/opt/cvm/node/bin/node -e 'fetch("http://127.0.0.1:18789/readyz").then((r) => console.log("READYZ=" + r.status))'`,
      "echo VERITY=$(findmnt -n -o SOURCE /)",
      // No TDX under QEMU here: the in-guest verifier must say so and exit 2, never pass.
      "cvm-verify; echo VERIFY_EXIT=$?",
      "",
    ].join("\n");
    const r = await quickstart("create", { ...qsEnv, QUICKSTART_SSH: "1" }, remote);
    console.log(r.out.split("\n").filter((l) => /status=|ready:|USER=|KEYFILE=|OPENCLAW=|READYZ=|VERITY=|VERIFY|TDX|rror/.test(l)).join("\n"));
    expect(r.code, r.out).toBe(0);
    name = /Instance is ready: ([a-z0-9]{8})\./.exec(r.out)![1]!;
    expect(r.out).toContain("USER=azureuser");
    expect(r.out).toContain("KEYFILE=600 azureuser");
    expect(r.out).toContain("OPENCLAW=active");
    expect(r.out).toContain("READYZ=200");
    expect(r.out).toMatch(/VERITY=\/dev\/mapper\//);
    expect(r.out).toContain("VERIFY_EXIT=2");
    expect(r.out).toMatch(/no TDX/);
    const ev = await (await fetch(`${cvmd!.url}/v1/instances/${name}/events`, { headers: { Authorization: `Bearer ${key}` } })).json();
    console.log((ev as { data: { events: Array<{ at: string; type: string; message: string }> } }).data.events.map((e) => `${e.at} ${e.type} ${e.message}`).join("\n"));
    const row = JSON.parse((await cvmctl(["instances", "--json"], env)).stdout) as Array<{ name: string }>;
    expect(row.map((x) => x.name)).toContain(name);
    const { stdout } = await execP("sqlite3", [join(data, "cvm.sqlite"), `SELECT id FROM instances WHERE name = '${name}'`]);
    instanceId = stdout.trim();
    expect(await qemuPids(instanceId)).toHaveLength(1);
  });

  it("tenant-side cvm-verify through the real API: no TDX under TCG, exit 2, known_hosts untouched", { timeout: 3 * 60_000 }, async () => {
    expect(name).not.toBe("");
    const reason = await expectTenantVerifyNoTdx({
      api: cvmd!.url,
      apiKey: key,
      name,
      manifest: join(IMAGE_DIR, "manifest.json"),
      sshKey: join(home, ".ssh", "id_ed25519.pub"),
      // Never read: without TDX the verifier stops before it needs collateral; it is required to run at all.
      collateral: join(FIXTURES_DIR, "tdx-v4-uptodate", "collateral.json"),
      knownHosts: join(home, ".ssh", "known_hosts"),
    });
    console.log(reason);
  });

  it("survives kill -9 of cvmd: still ready and reachable, no duplicate QEMU", { timeout: 5 * 60_000 }, async () => {
    expect(name).not.toBe("");
    const before = await qemuPids(instanceId);
    await cvmd!.kill("SIGKILL");
    expect(await qemuPids(instanceId)).toEqual(before);
    cvmd = await startCvmd(env);
    qsEnv.API_BASE = cvmd.url;
    const rec = (await (await fetch(`${cvmd.url}/v1/instances/${name}`, { headers: { Authorization: `Bearer ${key}` } })).json()) as { data: { status: string } };
    expect(rec.data.status).toBe("ready");
    const { stdout } = await execP("ssh", ["-F", join(home, ".ssh", "config"), "-i", join(home, ".ssh", "id_ed25519"), `${name}.acme.cvm.localhost`, "echo again-$(id -un)"], {
      env: { ...process.env, ...qsEnv },
      timeout: 120_000,
    });
    expect(stdout.trim()).toBe("again-azureuser");
    expect(await qemuPids(instanceId)).toEqual(before);
  });

  it("deletes: terminated, and QEMU, tap, egress rules and SSH forward are gone", { timeout: 3 * 60_000 }, async () => {
    expect(name).not.toBe("");
    const r = await quickstart("delete", { ...qsEnv, INSTANCE_NAME: name });
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('"terminated_reason": "deleted_via_api"');
    let status = "";
    for (let i = 0; i < 60; i++) {
      const rec = (await (await fetch(`${cvmd!.url}/v1/instances/${name}`, { headers: { Authorization: `Bearer ${key}` } })).json()) as { data: { status: string } };
      status = rec.data.status;
      if (status === "terminated") break;
      await new Promise((res) => setTimeout(res, 1000));
    }
    expect(status, "the instance's status 60 s after the delete").toBe("terminated");
    expect(await qemuPids(instanceId)).toEqual([]);
    const links = await run("ip", ["-n", env.CVM_NETNS!, "-o", "link", "show"]);
    expect(links.stdout).not.toMatch(/\btap/);
    const egress = await run("ip", ["netns", "exec", env.CVM_NETNS!, "nft", "-j", "list", "table", "netdev", env.CVM_EGRESS_TABLE!]);
    expect(egress.stdout).not.toContain("quota_");
    const nat = await run("nft", ["-j", "list", "table", "ip", env.CVM_NAT_TABLE!]);
    expect(nat.stdout).not.toContain('"dnat"');
  });
});
