import { execFile } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NftEgressFirewall } from "../../host/net/egress-firewall.js";
import { NftCommandRunner } from "../../host/net/nft-runner.js";
import { run } from "../../shared/util/run.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, startCvmd, type CvmdProcess } from "../support/processes.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { vmHostEnv } from "../support/vm-host.js";

/**
 * The warm pool with real guests (QEMU, TCG here): a pool guest boots and prepares with no tenant,
 * traffic it sends before the claim is not the tenant's, a create claims it and only claim-time
 * setup runs, the tenant logs in, the pool refills, and once pool + instances fill the capacity
 * budget a create with an empty pool fails with capacity_exhausted. Two guests in all.
 */
const execP = promisify(execFile);
const ROOT = new URL("../../", import.meta.url).pathname;
const IMAGE_DIR = process.env.CVM_E2E_IMAGE_DIR ?? join(ROOT, "images/out/current");
const BOOT_BUDGET_MS = 20 * 60_000;

interface PoolGuestRow {
  id: string;
  status: string;
  runtime: { ip: string; tap: string } | null;
  note: string | null;
}

describe("warm pool of real VMs (QEMU, TCG)", () => {
  const dir = tempDir("cvmpool-");
  const data = join(dir.path, "d");
  let host: ReturnType<typeof vmHostEnv> | undefined;
  let env: Record<string, string>;
  let cvmd: CvmdProcess | undefined;
  let key = "";
  const kp = sshKeyPair("ed25519");
  const keyFile = join(dir.path, "id_ed25519");
  let firstGuest: PoolGuestRow | undefined;
  let preClaimBytes = 0;
  const names: string[] = [];

  const api = async (path: string, init: RequestInit = {}) => {
    const res = await fetch(cvmd!.url + path, { ...init, headers: { ...(init.headers as Record<string, string>), Authorization: `Bearer ${key}` } });
    return { status: res.status, body: (await res.json()) as any };
  };
  const poolGuests = async (): Promise<PoolGuestRow[]> => {
    const { stdout } = await execP("sqlite3", ["-json", join(data, "cvm.sqlite"), "SELECT id, status, runtime, note FROM pool_guests ORDER BY created_at"]);
    // `note` says why a guest failed or went: printed with the pool while the test waits.
    return (stdout.trim() ? (JSON.parse(stdout) as Array<{ id: string; status: string; runtime: string | null; note: string | null }>) : []).map((r) => ({ ...r, runtime: r.runtime ? JSON.parse(r.runtime) : null }));
  };
  const poolStatus = async () => JSON.parse((await cvmctl(["pool", "--json"], env)).stdout) as { images: Array<{ current: boolean; warm: number; booting: number; claimed: number }>; refill_blocked: string | null; capacity: Record<string, number> };
  const firewall = () => new NftEgressFirewall({ nft: new NftCommandRunner({ netns: env.CVM_NETNS! }), table: env.CVM_EGRESS_TABLE! });

  async function waitWarm(exclude: string[]): Promise<PoolGuestRow> {
    const start = Date.now();
    let last = "";
    while (Date.now() - start < BOOT_BUDGET_MS) {
      const warm = (await poolGuests()).find((g) => g.status === "warm" && !exclude.includes(g.id));
      if (warm) {
        console.log(`pool guest ${warm.id} warm after ${((Date.now() - start) / 1000).toFixed(1)} s of waiting`);
        return warm;
      }
      const s = JSON.stringify(await poolGuests());
      if (s !== last) console.log(`pool: ${s}`);
      last = s;
      await new Promise((r) => setTimeout(r, 5000));
    }
    throw new Error(`no warm pool guest within ${BOOT_BUDGET_MS} ms; cvmd log:\n${cvmd?.logs.join("").slice(-4000)}`);
  }

  async function createAndWait(): Promise<{ name: string; rec: any; ms: number; events: Array<{ type: string; message: string; at: string }> }> {
    const t0 = Date.now();
    const res = await api("/v1/instances", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: kp.public }) });
    expect(res.status).toBe(202);
    const name = res.body.data.name as string;
    names.push(name);
    let rec = res.body.data;
    while (rec.status === "provisioning" && Date.now() - t0 < BOOT_BUDGET_MS) {
      await new Promise((r) => setTimeout(r, 500));
      rec = (await api(`/v1/instances/${name}`)).body.data;
    }
    const ms = Date.now() - t0;
    const events = (await api(`/v1/instances/${name}/events`)).body.data.events;
    console.log(`${name}: ${rec.status} after ${(ms / 1000).toFixed(1)} s\n` + events.map((e: { at: string; type: string; message: string }) => `  ${e.at} ${e.type} ${e.message}`).join("\n"));
    return { name, rec, ms, events };
  }

  const ssh = (rec: { ssh: { host: string; port: number } }, script: string) =>
    execP("ssh", ["-i", keyFile, "-p", String(rec.ssh.port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", `azureuser@${rec.ssh.host}`, script], { timeout: 120_000 });

  beforeAll(async () => {
    expect(existsSync(join(IMAGE_DIR, "manifest.json")), `no guest image at ${IMAGE_DIR}: run \`make image\``).toBe(true);
    writeFileSync(keyFile, kp.private, { mode: 0o600 });
    host = vmHostEnv(data, IMAGE_DIR, `w${process.pid.toString(36)}`, 78);
    // Two 2-vCPU guests fit: one instance plus one pool guest, then two instances and nothing else.
    env = { ...host.env, CVM_WARM_POOL_SIZE: "1", CVM_WARM_POOL_REFILL_SECONDS: "5", CVM_VM_VCPUS: "2", CVM_CAPACITY_VCPUS: "4", CVM_EGRESS_POLL_SECONDS: "2" };
    cvmd = await startCvmd(env);
    key = JSON.parse((await cvmctl(["tenant", "create", "acme", "--json"], env)).stdout).api_key;
  });

  afterAll(async () => {
    for (const name of names) await api(`/v1/instances/${name}`, { method: "DELETE" }).catch(() => undefined);
    await cvmd?.kill("SIGTERM");
    const { stdout } = await execP("pgrep", ["-f", `qemu-system-x86_64.*${data}`]).catch(() => ({ stdout: "" }));
    for (const pid of stdout.split("\n").filter(Boolean)) process.kill(Number(pid), "SIGKILL");
    await host?.cleanup();
    dir.remove();
  });

  it("boots a pool guest that prepares with no tenant; its pre-claim traffic is counted only under the pool guest", { timeout: BOOT_BUDGET_MS + 60_000 }, async () => {
    firstGuest = await waitWarm([]);
    expect(firstGuest.runtime?.ip).toMatch(/^10\.78\.0\.\d+$/);
    expect((await poolStatus()).images.find((i) => i.current)).toMatchObject({ warm: 1, booting: 0 });
    // The guest answers pings: ~300 KiB it sends before anyone owns it.
    await run("ip", ["netns", "exec", env.CVM_NETNS!, "ping", "-q", "-c", "200", "-i", "0.01", "-s", "1400", "-W", "2", firstGuest.runtime!.ip], { timeoutMs: 60_000 });
    const before = await firewall().sample();
    preClaimBytes = before.get(firstGuest.id)?.bytes ?? 0;
    console.log(`pool guest ${firstGuest.id} sent ${preClaimBytes} bytes before its claim`);
    expect(preClaimBytes).toBeGreaterThan(200 * 1400);
  });

  it("a create claims the warm guest: claim-time setup only, tenant logs in, OpenClaw not restarted, egress starts at zero", { timeout: 10 * 60_000 }, async () => {
    expect(firstGuest).toBeDefined();
    const a = await createAndWait();
    expect(a.rec.status, JSON.stringify(a.rec)).toBe("ready");
    const claim = a.events.find((e) => e.type === "claim");
    expect(claim?.message).toContain(`claimed warm guest ${firstGuest!.id}`);
    expect(a.events.some((e) => e.type === "cold_start")).toBe(false);
    expect(a.events.some((e) => e.type === "boot")).toBe(false);
    console.log(`warm claim create→ready: ${(a.ms / 1000).toFixed(1)} s`);

    const { stdout } = await ssh(
      a.rec,
      [
        "echo USER=$(id -un)",
        "stat -c 'KEYFILE=%a %U' ~/.ssh/authorized_keys",
        "echo OPENCLAW=$(systemctl is-active cvm-openclaw.service)",
        "echo STARTED=$(systemctl show -p ExecMainStartTimestampMonotonic --value cvm-openclaw.service)",
        "echo RESTARTS=$(systemctl show -p NRestarts --value cvm-openclaw.service)",
        "echo UPTIME=$(cut -d' ' -f1 /proc/uptime)",
        "grep -o '\"primary\": \"[^\"]*\"' ~/.openclaw/openclaw.json | sed 's/^/MODEL=/'",
      ].join("; "),
    );
    console.log(stdout);
    expect(stdout).toContain("USER=azureuser");
    expect(stdout).toContain("KEYFILE=600 azureuser");
    expect(stdout).toContain("OPENCLAW=active");
    expect(stdout).toContain(`MODEL="primary": "cvm/${a.rec.inference_model}"`);
    // OpenClaw was started while the guest waited in the pool, before the claim, and kept running: its
    // main process is older than the claim. (NRestarts, printed above, also counts restarts while
    // the guest prepared: under TCG OpenClaw sometimes gives up on its own 5 s state-lease timeout
    // and systemd starts it again before the pool calls the guest warm; that is not the claim's doing.)
    const startedS = Number(/STARTED=(\d+)/.exec(stdout)![1]) / 1e6;
    const uptimeS = Number(/UPTIME=([\d.]+)/.exec(stdout)![1]);
    expect(uptimeS - startedS).toBeGreaterThan(a.ms / 1000);

    // The tenant's count started at the claim: the instance's counter holds far less than what the
    // guest sent before (only the claim's SSH checks and this test's login), and the API agrees.
    const inst = (await execP("sqlite3", [join(data, "cvm.sqlite"), `SELECT id FROM instances WHERE name = '${a.name}'`])).stdout.trim();
    const after = await firewall().sample();
    expect(after.has(firstGuest!.id)).toBe(false);
    const tenantBytes = after.get(inst)?.bytes ?? -1;
    console.log(`instance counter after claim and login: ${tenantBytes} bytes (pre-claim: ${preClaimBytes})`);
    expect(tenantBytes).toBeGreaterThan(0);
    expect(tenantBytes).toBeLessThan(preClaimBytes / 4);
    let rec = a.rec;
    for (let i = 0; i < 30 && rec.egress === null; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      rec = (await api(`/v1/instances/${a.name}`)).body.data;
    }
    expect(rec.egress.bytes).toBeLessThan(preClaimBytes / 4);
    const usage = (await api("/v1/usage")).body.data;
    expect(usage.usage.egress_bytes).toBeLessThan(preClaimBytes / 4);
  });

  it("refills the pool with a new guest, which survives kill -9 of cvmd (adopted, not rebooted)", { timeout: BOOT_BUDGET_MS + 120_000 }, async () => {
    const next = await waitWarm([firstGuest!.id]);
    expect(next.id).not.toBe(firstGuest!.id);
    const s = await poolStatus();
    expect(s.images.find((i) => i.current)).toMatchObject({ warm: 1, claimed: 1 });

    const qemu = async () => (await execP("pgrep", ["-f", `qemu-system-x86_64.*${next.id}`]).catch(() => ({ stdout: "" }))).stdout.split("\n").filter(Boolean);
    const pids = await qemu();
    expect(pids).toHaveLength(1);
    await cvmd!.kill("SIGKILL");
    cvmd = await startCvmd(env);
    // Adoption re-checks the agent (hello: still prepared) before the guest counts as warm again.
    for (let i = 0; i < 120; i++) {
      const g = (await poolGuests()).find((x) => x.id === next.id);
      if (g?.status === "warm" && (await poolStatus()).images.find((x) => x.current)?.warm === 1) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    expect((await poolGuests()).filter((g) => g.status === "warm").map((g) => g.id)).toEqual([next.id]);
    expect(await qemu()).toEqual(pids);
    expect(cvmd.logs.join("")).toContain("adopted pool guest");
  });

  it("with pool + instances at the capacity budget: the next create claims, then one with an empty pool fails capacity_exhausted", { timeout: 10 * 60_000 }, async () => {
    const b = await createAndWait();
    expect(b.rec.status, JSON.stringify(b.rec)).toBe("ready");
    expect(b.events.some((e) => e.type === "claim")).toBe(true);
    console.log(`second warm claim create→ready: ${(b.ms / 1000).toFixed(1)} s`);
    // Two instances hold both slots: the pool cannot refill.
    await new Promise((r) => setTimeout(r, 6000));
    const s = await poolStatus();
    expect(s.images.find((i) => i.current)).toMatchObject({ warm: 0, booting: 0 });
    expect(s.refill_blocked).toMatch(/^capacity/);
    const c = await createAndWait();
    expect(c.rec.status).toBe("failed");
    expect(c.rec.failure_code).toBe("capacity_exhausted");
    expect(c.ms).toBeLessThan(30_000);
  });
});
