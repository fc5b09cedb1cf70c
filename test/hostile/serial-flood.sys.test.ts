import { mkdtemp, rm, stat } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import type { LaunchSpec } from "../../host/vmm/hypervisor.js";
import { findQemuByPidfile } from "../../host/proc.js";
import { QemuHypervisor } from "../../host/vmm/qemu-hypervisor.js";
import { readSerialTail } from "../../host/vmm/serial-console.js";
import { buildTinyInitramfs, ensureTinyKernel, tinyGuestNeeds, tinyGuestSpec } from "../../host/vmm/test/tiny-guest.js";
import { run } from "../../shared/util/run.js";
import { startOpsDaemon, type OpsDaemon } from "../ops/helpers.js";
import { FakeDriver } from "../support/fake-driver.js";
import { ATTACK_LIMITS, measureAttack } from "./harness.js";
import { prerequisites } from "../support/prerequisites.js";

/**
 * A root tenant floods its serial console (ttyS0) with ten times the log cap, against real QEMU running the tiny test
 * guest under TCG. The serial capture (cvmd's component) runs in this process beside the real daemon, whose API is the
 * bystander probed during the attack; the guest runs in QEMU, so its own work is not charged to this event loop.
 */

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cacheDir = path.join(repo, "var/cache/tiny-guest");

const why = prerequisites("the serial flood test", tinyGuestNeeds());

const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;
const CAP = 64 * 1024;
/** Low enough that the tiny guest's serial port, even under TCG, outruns it and the flood counts as one. */
const BUDGET = 32 * 1024;
const id = "flood-1";
/** The probe asks 20 times a second for minutes: the API's own rate limits are not what is measured here. */
const NO_RATE_LIMITS = { CVM_RATE_LIMIT: "0", CVM_RATE_LIMIT_PER_ADDRESS: "0" };

async function until(what: string, ok: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`${what} not seen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A console client that keeps reading what the guest prints (as an operator's terminal would). */
async function console_(sock: string): Promise<{ type(s: string): void; seen(): string; close(): void }> {
  const c = net.createConnection(sock);
  await new Promise<void>((resolve, reject) => {
    c.once("connect", () => resolve());
    c.once("error", reject);
  });
  let tail = "";
  c.on("data", (d: Buffer) => (tail = (tail + d.toString("latin1")).slice(-4096)));
  return { type: (s) => c.write(s), seen: () => tail, close: () => c.destroy() };
}

describe.skipIf(why !== null)("hostile guest: serial console flood", () => {
  let dataDir: string;
  let netns: string;
  let spec: LaunchSpec;
  let daemon: OpsDaemon | undefined;
  let hv: QemuHypervisor | undefined;
  let key: string;
  const logPath = () => path.join(dataDir, "vms", id, "serial.log");
  const logBytes = async () => {
    const sz = (f: string) => stat(f).then((s) => s.size, () => 0);
    return { cur: await sz(logPath()), old: await sz(`${logPath()}.1`) };
  };
  const hypervisor = (d: OpsDaemon) => new QemuHypervisor({ dataDir, serialLogMaxBytes: CAP, serialBytesPerSec: BUDGET, securityLog: d.securityLog });

  beforeAll(async () => {
    const kernel = await ensureTinyKernel(cacheDir);
    dataDir = await mkdtemp("/tmp/cvmsf-");
    await buildTinyInitramfs(path.join(dataDir, "initrd.img"), kernel);
    await run("dd", ["if=/dev/zero", `of=${path.join(dataDir, "rootfs.img")}`, "bs=1M", "count=1", "status=none"]);
    // QEMU creates the tap inside a namespace of our own, left down: the guest's DHCP attempts reach nothing.
    netns = `cvsf-${tag}`;
    await run("ip", ["netns", "add", netns]);
    daemon = await startOpsDaemon({ dataDir: path.join(dataDir, "daemon"), driver: new FakeDriver(), env: NO_RATE_LIMITS });
    key = await daemon.tenant("bystander");
    hv = hypervisor(daemon);
    spec = tinyGuestSpec({ instanceId: id, kernel, dir: dataDir, nic: { tap: `tsf${tag}`.slice(0, 15), mac: "52:54:00:5f:00:01" }, netns });
  }, 600_000);

  afterAll(async () => {
    if (dataDir) for (const pid of await findQemuByPidfile(path.join(dataDir, "vms", id, "qemu.pid"))) process.kill(pid, "SIGKILL");
    hv?.close();
    await daemon?.close();
    if (netns) await run("ip", ["netns", "del", netns]).catch((e) => console.warn(`netns cleanup: ${e}`));
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test("10x the cap leaves the log at its cap, cvmd unharmed, the flood recorded once, and cvmd restarts cleanly", async () => {
    const vm = await hv!.launch(spec);
    // The tiny guest's udhcpc gives up after ~20 s without a server, then starts its shell.
    await until("the guest's shell", async () => (await readSerialTail(logPath(), 4096)).includes("CVM-BOOT: ready"), 180_000);
    expect((await stat(logPath())).mode & 0o777).toBe(0o600);

    const probe = async () => {
      const r = await daemon!.fetch("/v1/instances", { key });
      expect(r.status).toBe(200);
    };
    // The same measurement with no attack, so a loaded machine shows up as such in the output.
    const cpu = async <T>(fn: () => Promise<T>): Promise<{ out: T; cpuMsPerSec: number }> => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const out = await fn();
      const c = process.cpuUsage(c0);
      return { out, cpuMsPerSec: ((c.user + c.system) / 1000) / ((performance.now() - t0) / 1000) };
    };
    const idleRun = await cpu(() => measureAttack({ attack: () => new Promise((r) => setTimeout(r, 5_000)), probe }));
    const idle = idleRun.out;
    const con = await console_(path.join(vm.runDir, "console.sock"));
    const floodStart = performance.now();
    const floodRun = await cpu(() => measureAttack({
      attack: async () => {
        // The marker is computed by the guest's shell, so the echoed command line does not match it.
        con.type(`yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c ${10 * CAP}; echo FLOOD-$((40+2))\r`);
        await until("the end of the flood", async () => (await readSerialTail(logPath(), 256)).includes("FLOOD-42"), 240_000);
      },
      probe,
    }));
    const cost = floodRun.out;
    const floodSeconds = (performance.now() - floodStart) / 1000;
    con.close();
    const show = (c: typeof cost) => JSON.stringify({ loopDelayMaxMs: c.loopDelayMaxMs, rssGrowthMiB: c.rssGrowthMiB, probes: c.probeMs.length, probeMaxMs: Math.max(...c.probeMs), probeP99Ms: [...c.probeMs].sort((a, b) => a - b)[Math.floor(c.probeMs.length * 0.99)] });
    console.log(
      `serial flood of ${10 * CAP} bytes in ${floodSeconds.toFixed(1)} s, cap ${CAP}, budget ${BUDGET} B/s: ${show(cost)}, cpuMsPerSec ${floodRun.cpuMsPerSec.toFixed(1)}; ` +
        `idle 5 s before it: ${show(idle)}, cpuMsPerSec ${idleRun.cpuMsPerSec.toFixed(1)}`,
    );
    // Soft: a loaded machine breaks these even with no attack (the idle line above says so); the checks below still run.
    expect.soft(cost.loopDelayMaxMs).toBeLessThan(ATTACK_LIMITS.loopDelayMaxMs);
    expect.soft(cost.rssGrowthMiB).toBeLessThan(ATTACK_LIMITS.rssGrowthMiB);
    expect.soft(Math.max(...cost.probeMs)).toBeLessThan(ATTACK_LIMITS.probeMs);

    const { cur, old } = await logBytes();
    expect(old).toBe(CAP / 2);
    expect(cur + old).toBeLessThanOrEqual(CAP);
    const floods = daemon!.security.filter((r) => r.event === "serial_flood");
    expect(floods).toHaveLength(1);
    expect(floods[0]).toMatchObject({ instance_id: id, bytes_per_sec: BUDGET });

    // cvmd restarts: the daemon and its hypervisor go, the guest stays; the next ones adopt it and capture again.
    hv!.close();
    await daemon!.close();
    daemon = await startOpsDaemon({ dataDir: path.join(dataDir, "daemon"), driver: new FakeDriver(), env: NO_RATE_LIMITS });
    key = await daemon.key("bystander");
    hv = hypervisor(daemon);
    const adopted = await hv.adopt(id);
    expect(adopted).toMatchObject({ adopted: true, pid: vm.pid });
    expect((await daemon.fetch("/v1/instances", { key })).status).toBe(200);
    const con2 = await console_(path.join(vm.runDir, "console.sock"));
    try {
      con2.type("echo AFTER-$((1+1))\r");
      await until("output after the restart", async () => (await readSerialTail(logPath(), 4096)).includes("AFTER-2"), 30_000);
      expect(con2.seen()).toContain("AFTER-2");
    } finally {
      con2.close();
    }
    const after = await logBytes();
    expect(after.cur + after.old).toBeLessThanOrEqual(CAP);
    expect(daemon.security.filter((r) => r.event === "serial_flood")).toHaveLength(0);
  }, 600_000);
});
