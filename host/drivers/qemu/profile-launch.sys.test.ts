import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { encodeMessage } from "../../../shared/protocol/codec.js";
import type { AgentHello, AgentMessage } from "../../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../../shared/protocol/testdata/samples.js";
import { serveHostFrames } from "../../../test/support/host-frame-server.js";
import { socatVsockStandIn } from "../../../test/support/agent-vm-double.js";
import { AgentLink, StdioBridgeConnector } from "../../link/index.js";
import { NetnsGuestNetwork } from "../../net/guest-network.js";
import type { LaunchSpec } from "../../vmm/hypervisor.js";
import { agentChannelsInArgv } from "../../vmm/profile-check.js";
import { PROFILES } from "../../vmm/profiles.js";
import { findQemuByPidfile } from "../../proc.js";
import { buildQemuArgs } from "../../vmm/qemu-args.js";
import { QemuHypervisor } from "../../vmm/qemu-hypervisor.js";
import { ensureRunDir, runPaths } from "../../vmm/run-dir.js";
import { buildTinyInitramfs, ensureTinyKernel, TINY_AGENT_HELLO } from "../../vmm/test/tiny-guest.js";
import { QemuDriver, type QemuDriverOptions } from "./qemu-driver.js";
import { prerequisites } from "../../../test/support/prerequisites.js";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;
const silent = pino({ level: process.env.CVM_TEST_LOG ?? "silent" });
const HELLO = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;

/** Only what the driver's constructor and its agent connector read: no guest is provisioned here. */
const driverFor = (o: Partial<QemuDriverOptions>) => new QemuDriver({ logger: silent, accel: "tcg", ...o } as QemuDriverOptions);

const whyPlain = prerequisites("the plain launch test", { root: true, tools: [["qemu-system-x86_64", ["--version"]], ["ip", ["-V"]], ["nft", ["--version"]], ["dnsmasq", ["--version"]], ["cpio", ["--version"]], ["busybox", ["--help"]]] });
const whyTdx = prerequisites("the tdx launch test", { root: true, tools: [["socat", ["-V"]]] });

/**
 * plain: a real QEMU (TCG) booting the tiny guest from the argv the profile builds; the driver's
 * connector must be QEMU's chardev socket from that argv, and bytes the guest writes to its
 * org.cvm.agent.0 port must come out of it.
 */
describe.skipIf(whyPlain !== null)("plain profile: the driver dials the virtio-serial socket QEMU's argv creates", () => {
  let dataDir: string;
  let gn: NetnsGuestNetwork;
  let hv: QemuHypervisor;
  const id = "plain-1";
  const cid = 77;

  beforeAll(async () => {
    const kernel = await ensureTinyKernel(path.join(repo, "var/cache/tiny-guest"));
    dataDir = await mkdtemp("/tmp/cvmpl-");
    await chmod(dataDir, 0o711); // dnsmasq drops to nobody and must reach its hosts file
    await buildTinyInitramfs(path.join(dataDir, "initrd.img"), kernel);
    await writeFile(path.join(dataDir, "rootfs.img"), Buffer.alloc(1024 * 1024));
    gn = new NetnsGuestNetwork({
      stateDir: path.join(dataDir, "net"),
      netns: `cvmpl-${tag}`,
      hostVeth: `plh-${tag}`.slice(0, 15),
      nsVeth: `pln-${tag}`.slice(0, 15),
      hostTable: `cvmpl_${tag}`,
      pool: "10.217.0.0/24",
      link: "10.217.255.0/31",
      sshPorts: { from: 23700, to: 23709 },
    });
    await gn.ensure();
    hv = new QemuHypervisor({ dataDir });
  }, 600_000);

  afterAll(async () => {
    if (hv) {
      for (const pid of await findQemuByPidfile(hv.paths(id).pidfile)) process.kill(pid, "SIGKILL");
      hv.close();
    }
    await gn?.destroy().catch((e) => console.warn(`net cleanup: ${e}`));
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test("argv, run dir and channel agree, and the guest's port answers on the socket the driver dials", async () => {
    const att = await gn.attach({ instanceId: id });
    const spec: LaunchSpec = {
      instanceId: id,
      profile: "plain",
      accel: "tcg",
      memoryMiB: 256,
      vcpus: 1,
      cid,
      image: { kernel: (await ensureTinyKernel(path.join(repo, "var/cache/tiny-guest"))).kernel, initrd: path.join(dataDir, "initrd.img"), cmdline: "console=ttyS0 panic=-1", disks: [{ id: "root", path: path.join(dataDir, "rootfs.img") }] },
      nic: { tap: att.tap, mac: att.mac },
      netns: att.netns,
    };
    const vm = await hv.launch(spec);
    // What QEMU was actually told (the launch record's argv after `ip netns exec <ns>`).
    const created = agentChannelsInArgv(vm.record.argv);
    expect(created).toEqual([{ kind: "unix", path: path.join(vm.runDir, "agent.sock") }]);

    const connector = driverFor({ dataDir, profile: "plain" }).agentConnector(id, cid);
    expect(connector.description).toBe(`unix:${path.join(vm.runDir, "agent.sock")}`);
    // The tiny guest writes a line to the port named org.cvm.agent.0 every second once booted (TCG: allow for a slow boot).
    const deadline = Date.now() + 240_000;
    let seen = "";
    while (Date.now() < deadline && !seen.includes(TINY_AGENT_HELLO)) {
      const s = await connector.connect(AbortSignal.timeout(5_000));
      seen += await new Promise<string>((resolve) => {
        let got = "";
        const t = setTimeout(() => finish(), 10_000);
        const finish = () => {
          clearTimeout(t);
          s.destroy();
          resolve(got);
        };
        s.on("data", (d: Buffer) => {
          got += d.toString();
          if (got.includes(TINY_AGENT_HELLO)) finish();
        });
        s.on("close", finish);
      });
    }
    expect(seen).toContain(TINY_AGENT_HELLO);
  }, 300_000);
});

/**
 * tdx: no TDX here, so no QEMU runs; the argv and run dir are the real ones, the driver's connector
 * is its real socat bridge, and the only substitution is the vsock address (a per-CID Unix socket,
 * as test/agent/vsock-bridge.sys.test.ts does).
 */
describe.skipIf(whyTdx !== null)("tdx profile: the driver dials vsock CID N (via socat), N being the argv's guest-cid", () => {
  let dir: string;
  const closers: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const c of closers.splice(0)) await c();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("argv, run dir and channel agree; the agent at that CID says hello, a neighbour CID's agent is not reached", async () => {
    dir = await mkdtemp("/tmp/cvmtd-");
    const id = "tdx-1";
    const cid = 4711;
    const paths = runPaths(dir, id);
    await ensureRunDir(paths);
    const argv = buildQemuArgs(
      { instanceId: id, profile: "tdx", accel: "kvm", cid, image: { kernel: "/k", initrd: "/i", cmdline: "console=ttyS0", disks: [] }, nic: { tap: "tap0", mac: "52:54:00:00:00:02" }, tdx: { firmware: "/fw/OVMF.tdx.fd" } },
      paths,
    );
    const created = agentChannelsInArgv(argv);
    expect(created).toEqual([{ kind: "vsock", cid, port: 1024 }]);
    expect(argv).not.toContain(paths.agent);

    const standIn = await socatVsockStandIn(dir);
    const serve = async (c: number, imageId: string) => {
      const srv = await serveHostFrames(standIn.path(c, 1024), (m, s) => {
        if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: { ...HELLO, image_id: imageId } }));
      });
      closers.push(() => srv.close());
    };
    await serve(cid, "the-guest-at-4711");
    await serve(cid + 1, "a-neighbour");

    const connector = driverFor({ dataDir: dir, profile: "tdx", socat: standIn.socat }).agentConnector(id, cid);
    expect(connector.description).toBe(`vsock:${cid}:1024`);
    expect((connector as StdioBridgeConnector).o.args).toEqual(["-d", "-d", "STDIO", `VSOCK-CONNECT:${cid}:1024`]);
    const link = new AgentLink({ connector, logger: silent, instanceId: id, backoff: { initialMs: 50, maxMs: 200 } });
    closers.unshift(() => link.close());
    const hello = new Promise<AgentHello>((resolve) => link.once("hello", resolve));
    link.start();
    expect((await hello).image_id).toBe("the-guest-at-4711");
  }, 60_000);
});

describe("a profile whose channel and argv disagree", () => {
  test("is refused when the driver is built", () => {
    const crossed = { ...PROFILES, tdx: { ...PROFILES.tdx, endpoint: PROFILES.plain.endpoint } };
    expect(() => driverFor({ dataDir: "/tmp/x", profile: "tdx", profiles: crossed })).toThrow(/profile tdx is inconsistent:[\s\S]*creates \{"kind":"vsock".*but the driver would dial \{"kind":"unix"/);
    expect(() => driverFor({ dataDir: "/tmp/x", profile: "tdx" })).not.toThrow();
  });
});
