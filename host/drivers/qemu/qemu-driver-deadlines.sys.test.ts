import { createHash, randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { sshKeyPair } from "../../../test/support/ssh-keys.js";
import type { AgentDoubleMode } from "../../../test/support/agent-double.js";
import { AgentVmHypervisorDouble, socatVsockStandIn } from "../../../test/support/agent-vm-double.js";
import { startTestDaemon, type TestDaemon } from "../../../test/support/daemon.js";
import { ImageCatalog } from "../../images/image-catalog.js";
import { NftEgressFirewall } from "../../net/egress-firewall.js";
import { NetnsGuestNetwork } from "../../net/guest-network.js";
import { NftCommandRunner } from "../../net/nft-runner.js";
import type { GuestProfile } from "../../vmm/hypervisor.js";
import { QemuDriver } from "./qemu-driver.js";
import { prerequisites } from "../../../test/support/prerequisites.js";

const why = prerequisites("setup-deadline tests", { root: true, tools: [["ip", ["-V"]], ["nft", ["--version"]], ["dnsmasq", ["--version"]], ["socat", ["-V"]]] });

const tag = randomBytes(3).toString("hex");
const ED = sshKeyPair("ed25519").public;
/** Short on purpose: each misbehaving agent must run into its phase's deadline. */
const TIMEOUTS = { bootMs: 4_000, setupAckMs: 2_000, setupMs: 3_000, sshMs: 2_000 };

/** A real image directory (files and manifest digests) the catalog verifies; its content never boots. */
async function imageDir(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const files: Record<string, string> = { vmlinuz: "kernel", "initrd.img": "initrd", "cmdline.txt": "console=ttyS0\n", "rootfs.img": "root" };
  const sha = (s: string) => createHash("sha256").update(s).digest("hex");
  for (const [f, c] of Object.entries(files)) await writeFile(join(dir, f), c);
  const manifest = {
    image_id: "deadline-test-1",
    cmdline: "console=ttyS0",
    digests: { kernel: sha(files.vmlinuz), initrd: sha(files["initrd.img"]), cmdline: sha(files["cmdline.txt"]), rootfs: sha(files["rootfs.img"]) },
  };
  await writeFile(join(dir, "manifest.json"), JSON.stringify(manifest));
  return dir;
}

/**
 * The QEMU driver, the lifecycle engine, SQLite, the API, guest networking and nftables are all
 * real; only the guest is the agent double (see AgentVmHypervisorDouble), reached over the channel
 * the profile's argv creates: QEMU's chardev socket under plain, vsock through the driver's socat
 * bridge under tdx. The host budget fits one guest, so a second create only starts if the first
 * failure gave its slot back.
 */
describe.skipIf(why !== null)("setup deadlines with a misbehaving agent", () => {
  let root: string;
  let gn: NetnsGuestNetwork;
  let firewall: NftEgressFirewall;
  let images: string;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    root = await mkdtemp("/tmp/cvmdl-");
    await chmod(root, 0o711); // dnsmasq drops to nobody and must reach its hosts file
    images = await imageDir(join(root, "image"));
    gn = new NetnsGuestNetwork({
      stateDir: join(root, "net"),
      netns: `cvmdl-${tag}`,
      hostVeth: `dlh-${tag}`,
      nsVeth: `dln-${tag}`,
      hostTable: `cvmdl_${tag}`,
      pool: "10.216.0.0/24",
      link: "10.216.255.0/31",
      sshPorts: { from: 23600, to: 23609 },
    });
    await gn.ensure();
    firewall = new NftEgressFirewall({ nft: new NftCommandRunner({ netns: `cvmdl-${tag}` }), table: `cvmdl_eg_${tag}` });
  }, 120_000);

  afterAll(async () => {
    for (const c of cleanups.splice(0)) await c().catch((e) => console.warn(`cleanup: ${e}`));
    await gn?.destroy().catch((e) => console.warn(`net cleanup: ${e}`));
    if (root) await rm(root, { recursive: true, force: true });
  }, 60_000);

  async function scenario(profile: GuestProfile, mode: AgentDoubleMode) {
    const dir = join(root, `${profile}-${mode}`);
    await mkdir(dir, { recursive: true });
    const standIn = await socatVsockStandIn(dir);
    const hv = new AgentVmHypervisorDouble({ dataDir: dir, mode, vsockPath: standIn.path });
    const logger = pino({ level: process.env.CVM_TEST_LOG ?? "silent" });
    const driver = new QemuDriver({
      dataDir: dir,
      hypervisor: hv,
      network: gn,
      firewall,
      images: new ImageCatalog({ dir: images, logger }),
      logger,
      profile,
      socat: standIn.socat,
      accel: "tcg",
      memoryMiB: 2048,
      vcpus: 2,
      tdx: profile === "tdx" ? { firmware: join(images, "vmlinuz") } : undefined,
      guestGatewayUrl: "http://127.0.0.1:18790/v1",
      timeouts: TIMEOUTS,
    });
    const d: TestDaemon = await startTestDaemon({ dataDir: join(dir, "db"), driver, env: { CVM_CAPACITY_MEMORY_MIB: "2048", CVM_CAPACITY_VCPUS: "2" } });
    cleanups.push(async () => {
      await d.close();
      await hv.killAll();
    });
    const t = await d.tenant(`t${tag}${profile}${mode}`.slice(0, 30));
    return { d, hv, key: t.apiKey };
  }

  async function createAndWaitFailed(d: TestDaemon, key: string): Promise<{ name: string; record: any; elapsedMs: number; events: any[] }> {
    const t0 = performance.now();
    const r = await d.fetch("/v1/instances", { key, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: ED }) });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    const name = r.body.data.name;
    for (let i = 0; i < 300; i++) {
      const g = await d.fetch(`/v1/instances/${name}`, { key });
      if (g.body.data.status !== "provisioning") {
        const elapsedMs = performance.now() - t0;
        const events = (await d.fetch(`/v1/instances/${name}/events`, { key })).body.data.events;
        return { name, record: g.body.data, elapsedMs, events };
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`instance ${name} still provisioning after 30 s`);
  }

  for (const profile of ["plain", "tdx"] as const) {
    test(`${profile}: an agent that crash-loops before acknowledging setup fails with agent_timeout within its deadline; VM gone, capacity back`, async () => {
      const { d, hv, key } = await scenario(profile, "crash");
      const first = await createAndWaitFailed(d, key);
      expect(first.record.status).toBe("failed");
      expect(first.record.failure_code).toBe("agent_timeout");
      expect(first.record.failure_message).toMatch(/did not acknowledge setup/);
      // The link re-sent setup after each crash: this is the loop that used to keep the instance provisioning forever.
      const guest = [...hv.guests.values()][0];
      expect(guest.setups).toBeGreaterThanOrEqual(2);
      // Bounded by the ack deadline, plus the launch of the double (a node process) and the polling.
      expect(first.elapsedMs).toBeGreaterThan(TIMEOUTS.setupAckMs);
      expect(first.elapsedMs).toBeLessThan(TIMEOUTS.setupAckMs + 15_000);
      expect(first.events.map((e: any) => e.message)).toContain("agent_timeout: The in-VM agent did not acknowledge setup within the allowed time.");
      // The channel dialed was the one the argv created.
      if (profile === "tdx") expect(guest.listen).toMatch(/vsock-\d+-1024\.sock$/);
      else expect(guest.listen).toMatch(/vms\/[0-9a-f-]+\/agent\.sock$/);
      await expectGone(hv, guest);

      // One guest fits the budget: this create runs (and fails the same way) only because the first gave its slot back.
      const second = await createAndWaitFailed(d, key);
      expect(second.record.failure_code).toBe("agent_timeout");
      await expectGone(hv, [...hv.guests.values()][1]);
    }, 90_000);

    test(`${profile}: an agent that refuses setup fails with setup_failed at once; VM gone, capacity back`, async () => {
      const { d, hv, key } = await scenario(profile, "refuse");
      const first = await createAndWaitFailed(d, key);
      expect(first.record.failure_code).toBe("setup_failed");
      expect(first.record.failure_message).toMatch(/refused setup \(invalid_request\)/);
      const guest = [...hv.guests.values()][0];
      expect(guest.setups).toBe(1);
      // A refusal is an answer: no deadline is waited out.
      expect(first.elapsedMs).toBeLessThan(TIMEOUTS.setupAckMs + 10_000);
      await expectGone(hv, guest);
      const second = await createAndWaitFailed(d, key);
      expect(second.record.failure_code).toBe("setup_failed");
    }, 90_000);
  }

  // The other phases, on the vsock path (the one that could not work before profiles were data).
  const phases: Array<{ mode: AgentDoubleMode; code: string; message: RegExp; deadlineMs: number }> = [
    { mode: "mute", code: "boot_timeout", message: /did not boot/, deadlineMs: TIMEOUTS.bootMs },
    { mode: "stall", code: "agent_timeout", message: /did not report ready/, deadlineMs: TIMEOUTS.setupMs },
    { mode: "ready", code: "ssh_unreachable", message: /SSH in the VM was not reachable/, deadlineMs: TIMEOUTS.sshMs },
  ];
  for (const { mode, code, message, deadlineMs } of phases) {
    test(`tdx: agent double "${mode}" fails with ${code} after its phase's deadline; VM gone`, async () => {
      const { d, hv, key } = await scenario("tdx", mode);
      const r = await createAndWaitFailed(d, key);
      expect(r.record.failure_code).toBe(code);
      expect(r.record.failure_message).toMatch(message);
      expect(r.elapsedMs).toBeGreaterThan(deadlineMs);
      expect(r.elapsedMs).toBeLessThan(deadlineMs + 15_000);
      if (code === "ssh_unreachable") {
        // Each attempt's reason is in the events (runs of one reason folded), not only in the failure's cause.
        const ssh = r.events.filter((e: any) => /^ssh attempts? \d/.test(e.message)).map((e: any) => e.message);
        expect(ssh.length, JSON.stringify(r.events.map((e: any) => e.message))).toBeGreaterThanOrEqual(1);
        expect(ssh.join("\n")).toMatch(/^ssh attempts? 1(–\d+)? \(\d+(–\d+)? s\): (SSH connection failed|no SSH handshake|connection closed)/);
      }
      await expectGone(hv, [...hv.guests.values()][0]);
    }, 60_000);
  }

  async function expectGone(hv: AgentVmHypervisorDouble, guest: { child: { pid?: number } }) {
    const pid = guest.child.pid!;
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
    for (const id of hv.guests.keys()) if (hv.guests.get(id) === guest) expect((await hv.inspect(id)).state).toBe("stopped");
    // Its tap is detached as well.
    expect((await gn.list()).length).toBe(0);
  }
});
