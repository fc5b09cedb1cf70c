import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { afterAll, beforeAll, describe, expect, test } from "vitest";

import { run } from "../../shared/util/run.js";
import { NetnsGuestNetwork, type GuestAttachment } from "../net/guest-network.js";
import { watchBootPhases, type BootPhaseWatch } from "./boot-phases.js";
import type { LaunchedVm, LaunchSpec } from "./hypervisor.js";
import { findQemuByPidfile, isAlive, readCmdline } from "../proc.js";
import { QemuHypervisor } from "./qemu-hypervisor.js";
import { openConsole, readSerialTail } from "./serial-console.js";
import { buildTinyInitramfs, ensureTinyKernel, TINY_AGENT_HELLO, TINY_BANNER, tinyGuestNeeds, tinyGuestSpec, type TinyKernel } from "./test/tiny-guest.js";
import { prerequisites } from "../../test/support/prerequisites.js";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cacheDir = path.join(repo, "var/cache/tiny-guest");

const why = prerequisites("QEMU boot tests", tinyGuestNeeds([["nft", ["--version"]], ["dnsmasq", ["--version"]], ["socat", ["-V"]]]));

const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;

/** Reads what a TCP server sends first; bounded retries because the guest's listener may start a moment late. */
async function readBanner(port: number): Promise<string> {
  let last: unknown;
  for (let i = 0; i < 20; i++) {
    try {
      return await new Promise<string>((resolve, reject) => {
        const s = net.createConnection({ host: "127.0.0.1", port });
        let data = "";
        const t = setTimeout(() => {
          s.destroy();
          reject(new Error("no banner within 3 s"));
        }, 3_000);
        s.on("data", (d) => (data += d.toString()));
        s.on("end", () => {
          clearTimeout(t);
          resolve(data);
        });
        s.on("error", (e) => {
          clearTimeout(t);
          reject(e);
        });
      });
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw last;
}

describe.skipIf(why !== null)("QemuHypervisor boots a tiny guest under TCG in the guest namespace", () => {
  let kernel: TinyKernel;
  let dataDir: string;
  let gn: NetnsGuestNetwork;
  let hv: QemuHypervisor;
  let att: GuestAttachment;
  let spec: LaunchSpec;
  let vm: LaunchedVm;
  let watch: BootPhaseWatch | undefined;
  let launchedAt = 0;
  const id = "tiny-1";

  beforeAll(async () => {
    kernel = await ensureTinyKernel(cacheDir);
    dataDir = await mkdtemp("/tmp/cvmq-");
    await chmod(dataDir, 0o711); // dnsmasq drops to nobody and must reach its hosts file
    await buildTinyInitramfs(path.join(dataDir, "initrd.img"), kernel);
    await writeFile(path.join(dataDir, "rootfs.img"), Buffer.alloc(1024 * 1024));
    gn = new NetnsGuestNetwork({
      stateDir: path.join(dataDir, "net"),
      netns: `cvmq-${tag}`,
      bridge: `br-${tag}`.slice(0, 15),
      hostVeth: `cqh-${tag}`.slice(0, 15),
      nsVeth: `cqn-${tag}`.slice(0, 15),
      hostTable: `cvmq_${tag}`,
      pool: "10.214.0.0/24",
      link: "10.214.255.0/31",
      sshPorts: { from: 23500, to: 23509 },
    });
    await gn.ensure();
    att = await gn.attach({ instanceId: id });
    hv = new QemuHypervisor({ dataDir });
    spec = tinyGuestSpec({ instanceId: id, kernel, dir: dataDir, nic: { tap: att.tap, mac: att.mac }, netns: att.netns });
  }, 600_000);

  afterAll(async () => {
    watch?.stop();
    if (hv) {
      const p = hv.paths(id);
      for (const pid of await findQemuByPidfile(p.pidfile)) process.kill(pid, "SIGKILL");
      hv.close();
    }
    await gn?.destroy().catch((e) => console.warn(`net cleanup: ${e}`));
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test("a launch that QEMU rejects still leaves its launch record (written before QEMU runs)", async () => {
    const bad = { ...spec, instanceId: "bad-1", image: { ...spec.image, kernel: path.join(dataDir, "no-such-vmlinuz") } };
    await expect(hv.launch(bad)).rejects.toThrow(/did not start: .*no-such-vmlinuz/);
    const rec = JSON.parse(await readFile(path.join(dataDir, "vms/bad-1/launch.json"), "utf8"));
    expect(rec).toMatchObject({ instanceId: "bad-1", cid: 3, tap: att.tap, mac: att.mac, netns: att.netns });
    expect(rec.argv.slice(0, 5)).toEqual(["ip", "netns", "exec", att.netns, "qemu-system-x86_64"]);
    expect((await hv.inspect("bad-1")).state).toBe("stopped");
    await hv.purge("bad-1");
    expect(await hv.list()).toEqual([]);
  });

  test("launch: daemonized QEMU inside the namespace, recorded pid/CID/tap", async () => {
    launchedAt = performance.now();
    vm = await hv.launch(spec);
    watch = watchBootPhases(path.join(vm.runDir, "serial.log"), { fromOffset: vm.record.serialOffset, startedAt: launchedAt });
    expect(Number((await readFile(path.join(vm.runDir, "qemu.pid"), "utf8")).trim())).toBe(vm.pid);
    const argv = await readCmdline(vm.pid);
    expect(argv?.[0]).toBe("qemu-system-x86_64");
    expect(argv).toEqual(vm.record.argv.slice(4));
    const rec = JSON.parse(await readFile(path.join(vm.runDir, "launch.json"), "utf8"));
    expect(rec).toMatchObject({ instanceId: id, cid: 3, tap: att.tap, mac: att.mac, profile: "plain", accel: "tcg" });
    // QEMU runs in our namespace, not the host's.
    const qns = await stat(`/proc/${vm.pid}/ns/net`);
    const ns = await stat(`/run/netns/${att.netns}`);
    expect(qns.ino).toBe(ns.ino);
    // Its own session: cvmd's death does not reach it.
    const sid = async (pid: number) => Number((await readFile(`/proc/${pid}/stat`, "utf8")).split(") ")[1].split(" ")[3]);
    expect(await sid(vm.pid)).not.toBe(await sid(process.pid));
    await expect(hv.launch(spec)).rejects.toThrow(/already runs as pid/);
  });

  test("guest boots and gets its DHCP address, with the bridge as router and no DNS", async () => {
    await watch!.waitFor("ready", 120_000);
    const phases = watch!.phases();
    console.log(`tiny guest boot (launch -> marker, ms): qemu daemonized ${Math.round(vm.startMs)}; ` +
      phases.map((h) => `${h.phase}=${h.atMs}${h.kernelTime !== undefined ? ` (kernel ${h.kernelTime}s)` : ""}`).join(", "));
    const dhcp = phases.find((h) => h.phase === "dhcp");
    if (!dhcp) console.log(await readSerialTail(path.join(vm.runDir, "serial.log"), 6000));
    expect(dhcp?.line).toBe(`CVM-BOOT: dhcp ip=${att.ip} router=${gn.cfg.bridgeIp} dns=`);
    // The route ends in the namespace, which has none onwards (NAT is off).
    expect((await run("ip", ["-n", att.netns, "route", "show", "default"])).stdout.trim()).toBe("");
    expect(phases.map((h) => h.phase)).toEqual(expect.arrayContaining(["kernel", "initramfs", "init", "dhcp", "listening", "agent-port", "ready"]));
    // dnsmasq runs with --quiet-dhcp (its log must not grow with what guests send): the lease is the record.
    const leases = await readFile(gn.dhcp.leaseFile, "utf8");
    expect(leases).toMatch(new RegExp(`^\\d+ ${att.mac} ${att.ip.replaceAll(".", "\\.")} `, "m"));
  });

  test("a TCP connection to the forwarded 127.0.0.1 port reaches the guest's listener", async () => {
    expect(att.ssh.host).toBe("127.0.0.1");
    expect((await readBanner(att.ssh.port)).trim()).toBe(TINY_BANNER);
  });

  test("QMP query-status and the agent's virtio-serial socket work", async () => {
    expect(await hv.inspect(id)).toMatchObject({ state: "running", pid: vm.pid, status: "running" });
    const got = await new Promise<string>((resolve, reject) => {
      const s = net.createConnection(path.join(vm.runDir, "agent.sock"));
      let data = "";
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error(`agent socket gave ${JSON.stringify(data)}`));
      }, 10_000);
      s.on("data", (d) => {
        data += d.toString();
        if (data.includes(TINY_AGENT_HELLO)) {
          clearTimeout(t);
          s.destroy();
          resolve(data);
        }
      });
      s.on("error", reject);
    });
    expect(got).toContain(TINY_AGENT_HELLO);
  });

  test("interactive console through node-pty + socat; the serial log keeps it too", async () => {
    const con = await openConsole(vm.runDir);
    let out = "";
    con.onData((d) => (out += d));
    try {
      for (let i = 0; i < 40 && !out.includes("con-42"); i++) {
        if (i % 10 === 0) con.write("echo con-$((6*7))\r");
        await new Promise((r) => setTimeout(r, 250));
      }
    } finally {
      con.close();
    }
    expect(out).toContain("con-42");
    expect(await readSerialTail(path.join(vm.runDir, "serial.log"), 4096)).toContain("con-42");
  });

  test("the guest cannot reach a service on the host (its end of the veth)", async () => {
    let connections = 0;
    const server = net.createServer((s) => {
      connections++;
      s.end("host-secret\n");
    });
    await new Promise<void>((r) => server.listen(0, "0.0.0.0", () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const con = await openConsole(vm.runDir);
    let out = "";
    con.onData((d) => (out += d));
    try {
      con.write(`nc -w 2 ${gn.cfg.hostLinkIp} ${port} </dev/null; echo probe-rc=$?\r`);
      for (let i = 0; i < 40 && !/probe-rc=\d/.test(out); i++) await new Promise((r) => setTimeout(r, 250));
    } finally {
      con.close();
      server.close();
    }
    expect(out).toMatch(/probe-rc=[1-9]/);
    expect(out).not.toContain("host-secret");
    expect(connections).toBe(0);
  });

  test("after a cvmd restart, adopt re-attaches the running QEMU without starting another", async () => {
    hv.close(); // the old daemon's monitor connection goes away, as when cvmd dies
    hv = new QemuHypervisor({ dataDir });
    const r = await hv.adopt(id);
    expect(r).toMatchObject({ adopted: true, pid: vm.pid, status: "running" });
    expect(await findQemuByPidfile(path.join(vm.runDir, "qemu.pid"))).toEqual([vm.pid]);
    expect(await hv.list()).toEqual([id]);
    // And the network side agrees after its own restart.
    const gn2 = new NetnsGuestNetwork(gn.cfg);
    expect(await gn2.attach({ instanceId: id })).toEqual(att);
    expect((await readBanner(att.ssh.port)).trim()).toBe(TINY_BANNER);
  });

  test("adopt refuses a pidfile that names some other process", async () => {
    const other = "other-1";
    const p = hv.paths(other);
    await run("mkdir", ["-p", p.dir]);
    await writeFile(p.launchJson, JSON.stringify({ ...vm.record, instanceId: other }));
    await writeFile(p.pidfile, String(process.pid));
    expect(await hv.adopt(other)).toMatchObject({ adopted: false, reason: "not-ours" });
    await rm(p.dir, { recursive: true });
  });

  test("stop: asks (powerdown), then QMP quit; the process is gone", async () => {
    const r = await hv.stop(id, { graceMs: 300 });
    // busybox init has no ACPI handler, so the polite request is ignored and quit does it.
    expect(r.stoppedBy).toBe("quit");
    expect(await isAlive(vm.pid)).toBe(false);
    expect(await findQemuByPidfile(path.join(vm.runDir, "qemu.pid"))).toEqual([]);
    expect(await hv.inspect(id)).toMatchObject({ state: "stopped" });
    expect(await hv.adopt(id)).toMatchObject({ adopted: false, reason: "dead" });
    expect(await hv.stop(id)).toMatchObject({ stoppedBy: "already-stopped" });
  });

  test("stop escalates to signals when the monitor does not answer", async () => {
    const att2 = await gn.attach({ instanceId: "wedged-1" });
    const fast = new QemuHypervisor({ dataDir, qmpTimeoutMs: 500, escalateAfterMs: 500 });
    const v2 = await fast.launch({ ...spec, instanceId: "wedged-1", cid: 4, nic: { tap: att2.tap, mac: att2.mac } });
    process.kill(v2.pid, "SIGSTOP"); // a frozen QEMU: QMP never greets, SIGTERM stays pending
    try {
      const r = await fast.stop("wedged-1");
      expect(r.stoppedBy).toBe("sigkill");
      expect(await isAlive(v2.pid)).toBe(false);
    } finally {
      if (await isAlive(v2.pid)) process.kill(v2.pid, "SIGKILL");
      fast.close();
    }
    await fast.purge("wedged-1");
    await gn.detach("wedged-1");
  });

  test("detach removes the tap and the forward", async () => {
    await gn.detach(id);
    await expect(run("ip", ["-n", att.netns, "link", "show", att.tap])).rejects.toThrow(/does not exist/);
    expect((await run("nft", ["list", "table", "ip", gn.cfg.hostTable])).stdout).not.toContain(`dport ${att.ssh.port}`);
    await expect(
      new Promise((resolve, reject) => {
        const s = net.createConnection({ host: "127.0.0.1", port: att.ssh.port }, () => resolve(s.destroy()));
        s.on("error", reject);
      }),
    ).rejects.toThrow(/ECONNREFUSED/);
    await hv.purge(id);
    expect(await hv.list()).toEqual([]);
  });

  test("destroy deletes the namespace", async () => {
    await gn.destroy();
    expect((await run("ip", ["netns", "list"])).stdout).not.toContain(att.netns);
  });
});
