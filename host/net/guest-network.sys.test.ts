import { chmod, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, describe, expect, test } from "vitest";

import { run } from "../../shared/util/run.js";
import { isAlive } from "../proc.js";
import { NetnsGuestNetwork } from "./guest-network.js";
import { prerequisites } from "../../test/support/prerequisites.js";

const why = prerequisites("guest network tests", { root: true, tools: [["ip", ["-V"]], ["nft", ["--version"]], ["dnsmasq", ["--version"]], ["sysctl", ["-V"]]] });

const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;

describe.skipIf(why !== null)("NetnsGuestNetwork (kernel objects only)", async () => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), "cvm-gn-"));
  await chmod(stateDir, 0o711); // dnsmasq drops to nobody and must reach its hosts file
  const opts = {
    stateDir,
    netns: `cvmt-${tag}`,
    bridge: `br-${tag}`.slice(0, 15),
    hostVeth: `cvh-${tag}`.slice(0, 15),
    nsVeth: `cvn-${tag}`.slice(0, 15),
    hostTable: `cvmt_${tag}`,
    pool: "10.213.0.0/24",
    link: "10.213.255.0/31",
    sshPorts: { from: 23400, to: 23402 },
  };
  const net = new NetnsGuestNetwork(opts);
  afterAll(async () => {
    await net.destroy().catch((e) => console.warn(`cleanup: ${e}`));
    await rm(stateDir, { recursive: true, force: true });
  });

  test("ensure builds namespace, veth, bridge, filters and DHCP; twice is harmless", async () => {
    await net.ensure();
    await net.ensure();
    expect((await run("ip", ["netns", "list"])).stdout).toContain(opts.netns);
    const hostAddr = (await run("ip", ["-4", "-o", "addr", "show", opts.hostVeth])).stdout;
    expect(hostAddr).toContain("10.213.255.0/31");
    const br = (await run("ip", ["-n", opts.netns, "-4", "-o", "addr", "show", opts.bridge])).stdout;
    expect(br).toContain("10.213.0.1/24");
    expect((await run("ip", ["route", "show", "10.213.0.0/24"])).stdout).toContain(`via 10.213.255.1 dev ${opts.hostVeth}`);
    // No default route in the namespace with NAT off: guests reach nothing outside.
    expect((await run("ip", ["-n", opts.netns, "route", "show", "default"])).stdout.trim()).toBe("");
    expect((await readFile(`/proc/sys/net/ipv4/conf/${opts.hostVeth}/route_localnet`, "utf8")).trim()).toBe("1");
    expect(await net.dhcp.pid()).toBeGreaterThan(1);
    const guestFilter = (await run("ip", ["netns", "exec", opts.netns, "nft", "list", "table", "inet", "cvm_guest"])).stdout;
    expect(guestFilter).toMatch(/policy drop/);
  });

  test("attach allocates tap, MAC, address and SSH port; is idempotent; ports are isolated", async () => {
    const a = await net.attach({ instanceId: "inst-a" });
    expect(a).toEqual({
      instanceId: "inst-a", index: 2, tap: "tap2", mac: "52:54:0a:d5:00:02", ip: "10.213.0.2", netns: opts.netns,
      ssh: { host: "127.0.0.1", port: 23400 },
    });
    expect(await net.attach({ instanceId: "inst-a" })).toEqual(a);
    const b = await net.attach({ instanceId: "inst-b", index: 7 });
    expect(b).toMatchObject({ tap: "tap7", ip: "10.213.0.7", ssh: { port: 23401 } });
    await expect(net.attach({ instanceId: "inst-c", index: 7 })).rejects.toThrow(/taken by inst-b/);
    await expect(net.attach({ instanceId: "inst-a", index: 3 })).rejects.toThrow(/attached with index 2/);

    const link = JSON.parse((await run("ip", ["-n", opts.netns, "-d", "-j", "link", "show", "tap2"])).stdout)[0];
    expect(link.master).toBe(opts.bridge);
    expect(link.linkinfo.info_slave_data.isolated).toBe(true);
    expect(await readFile(net.dhcp.hostsFile, "utf8")).toBe("52:54:0a:d5:00:02,10.213.0.2\n52:54:0a:d5:00:07,10.213.0.7\n");
    const nat = (await run("nft", ["list", "table", "ip", opts.hostTable])).stdout;
    expect(nat).toMatch(/ip daddr 127\.0\.0\.1 tcp dport 23400 dnat to 10\.213\.0\.2:22/);
    expect(nat).toMatch(/ip daddr 127\.0\.0\.1 tcp dport 23401 dnat to 10\.213\.0\.7:22/);
    expect(nat).toMatch(new RegExp(`oifname "${opts.hostVeth}" masquerade`));
  });

  test("a fresh object (cvmd restart) sees the same allocations and rebuilds a deleted tap", async () => {
    await run("ip", ["-n", opts.netns, "link", "del", "tap7"]);
    const again = new NetnsGuestNetwork(opts);
    const before = await again.list();
    expect(before.map((x) => [x.instanceId, x.tapPresent])).toEqual([["inst-a", true], ["inst-b", false]]);
    const pid = await again.dhcp.pid();
    await again.ensure();
    expect(await again.dhcp.pid()).toBe(pid); // the running dnsmasq is kept, not duplicated
    expect((await again.list()).every((x) => x.tapPresent)).toBe(true);
  });

  test("detach removes tap, DHCP entry and forward; pool exhaustion is reported", async () => {
    await net.detach("inst-b");
    await net.detach("inst-b");
    await expect(run("ip", ["-n", opts.netns, "link", "show", "tap7"])).rejects.toThrow(/does not exist/);
    expect(await readFile(net.dhcp.hostsFile, "utf8")).toBe("52:54:0a:d5:00:02,10.213.0.2\n");
    expect((await run("nft", ["list", "table", "ip", opts.hostTable])).stdout).not.toMatch(/23401/);
    await net.attach({ instanceId: "x1" });
    await net.attach({ instanceId: "x2" });
    await expect(net.attach({ instanceId: "x3" })).rejects.toThrow(/SSH port pool 23400-23402 is exhausted/);
    expect((await net.list()).map((x) => x.instanceId).sort()).toEqual(["inst-a", "x1", "x2"]);
  });

  test("a state dir dnsmasq cannot reach as nobody is refused with the reason", async () => {
    const locked = path.join(stateDir, "locked");
    await mkdir(locked, { mode: 0o700 });
    const other = new NetnsGuestNetwork({ ...opts, stateDir: path.join(locked, "net"), netns: `${opts.netns}x`, hostVeth: `cvx-${tag}`.slice(0, 15), hostTable: `${opts.hostTable}x` });
    try {
      await expect(other.ensure()).rejects.toThrow(/cannot reach .*hosts: .*locked is not searchable by others/);
    } finally {
      await other.destroy();
    }
  });

  test("destroy removes namespace, veth, host table and dnsmasq", async () => {
    const pid = await net.dhcp.pid();
    await net.destroy();
    expect((await run("ip", ["netns", "list"])).stdout).not.toContain(opts.netns);
    await expect(run("ip", ["link", "show", opts.hostVeth])).rejects.toThrow();
    await expect(run("nft", ["list", "table", "ip", opts.hostTable])).rejects.toThrow();
    expect(pid).not.toBeNull();
    expect(await isAlive(pid!)).toBe(false);
    expect(await net.list()).toEqual([]);
  });
});
