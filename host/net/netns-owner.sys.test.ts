import { spawn } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { afterAll, describe, expect, test } from "vitest";

import { run } from "../../shared/util/run.js";
import { isAlive } from "../proc.js";
import { NetnsGuestNetwork } from "./guest-network.js";
import { Netns } from "./netns.js";
import { isDnsmasq, NetnsOwnedError, NetnsOwnership, nsProcesses } from "./netns-owner.js";
import { prerequisites } from "../../test/support/prerequisites.js";

const why = prerequisites("namespace ownership tests", { root: true, tools: [["ip", ["-V"]], ["nft", ["--version"]], ["dnsmasq", ["--version"]], ["sysctl", ["-V"]]] });

const tag = `${process.pid.toString(36)}${Date.now().toString(36).slice(-3)}`;

/** Logger stand-in that keeps the lines cvmd would log. */
function lines() {
  const seen: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  const record = (level: string) => (obj: object, msg: string) => void seen.push({ level, obj: obj as Record<string, unknown>, msg });
  return { seen, info: record("info"), warn: record("warn") };
}

describe.skipIf(why !== null)("one data dir per guest namespace (real ip netns, nft, dnsmasq)", async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), "cvm-own-"));
  await chmod(root, 0o711); // dnsmasq drops to nobody and must reach its hosts file
  const netns = `cvmo-${tag}`;
  // Two data dirs configured alike but for the data dir: the incident's "fresh data dir, same CVM_NETNS".
  const opts = (dataDir: string) => ({
    stateDir: path.join(dataDir, "net"),
    owner: dataDir,
    netns,
    bridge: `bro-${tag}`.slice(0, 15),
    hostVeth: `coh-${tag}`.slice(0, 15),
    nsVeth: `con-${tag}`.slice(0, 15),
    hostTable: `cvmo_${tag}`,
    pool: "10.222.0.0/24",
    link: "10.222.255.0/31",
    sshPorts: { from: 23700, to: 23709 },
  });
  const dirA = path.join(root, "a");
  const dirB = path.join(root, "b");
  for (const d of [dirA, dirB]) await mkdir(d, { mode: 0o711 });
  const ns = new Netns(netns);
  const dnsmasqs = async () => (await nsProcesses(ns)).filter(isDnsmasq);
  const others: Array<{ cleanup(): Promise<void> }> = [];

  afterAll(async () => {
    for (const o of others) await o.cleanup().catch(() => undefined);
    for (const p of await ns.pids().catch(() => [])) process.kill(p, "SIGKILL");
    await new NetnsGuestNetwork(opts(dirB)).destroy().catch((e) => console.warn(`cleanup: ${e}`));
    await rm(root, { recursive: true, force: true });
  });

  test("the first data dir creates and marks the namespace; a second is refused with one line naming the first", async () => {
    const a = new NetnsGuestNetwork(opts(dirA));
    await a.ensure();
    await a.attach({ instanceId: "guest-of-a" });
    expect((await run("ip", ["-n", netns, "-j", "link", "show", "lo"])).stdout).toContain(`"ifalias":"cvmd-owner:${dirA}"`);
    expect(await a.ownership.owner()).toEqual({ dataDir: dirA, complete: true });
    const aDhcp = await a.dhcp.pid();

    // A restart of A's cvmd adopts it as before.
    await new NetnsGuestNetwork(opts(dirA)).ensure();
    expect((await dnsmasqs()).map((p) => p.pid)).toEqual([aDhcp]);

    const b = new NetnsGuestNetwork(opts(dirB), { ownerLiveness: (d) => (d === dirA ? { pid: 4242, role: "cvmd" } : null) });
    const err = await b.ensure().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(NetnsOwnedError);
    const msg = (err as Error).message;
    expect(msg.split("\n")).toHaveLength(1);
    expect(msg).toBe(
      `network namespace ${netns} (CVM_NETNS) belongs to data dir ${dirA}, whose cvmd is running (pid 4242), not to ${dirB}: ` +
        `set CVM_NETNS to another name, or stop that cvmd and then run \`cvmctl netns takeover\` with CVM_DATA_DIR=${dirB} to take it over`,
    );
    // Refused before anything was built: still A's one dnsmasq, and B left no state behind.
    expect((await dnsmasqs()).map((p) => p.pid)).toEqual([aDhcp]);
    expect(await b.dhcp.pid()).toBeNull();
  });

  test("an unmarked namespace (older cvmd) is adopted by the data dir whose processes it holds, refused by another", async () => {
    await run("ip", ["-n", netns, "link", "set", "dev", "lo", "alias", ""]);
    expect(await new NetnsOwnership(ns, dirA).owner()).toBeNull();
    const b = new NetnsGuestNetwork(opts(dirB));
    await expect(b.ensure()).rejects.toThrow(new RegExp(`carries no owner mark .* \\(pid \\d+ dnsmasq of ${dirA}\\)`));
    expect(await new NetnsOwnership(ns, dirA).owner()).toBeNull();

    const log = lines();
    await new NetnsGuestNetwork(opts(dirA), { logger: log }).ensure();
    expect(await new NetnsOwnership(ns, dirA).owner()).toEqual({ dataDir: dirA, complete: true });
    expect(log.seen.map((l) => l.obj.how)).toContain("marked");
  });

  test("a dnsmasq in our namespace that our pid file does not name is stopped at start, with one log line", async () => {
    const a = new NetnsGuestNetwork(opts(dirA));
    const kept = await a.dhcp.pid();
    // What the incident found: another data dir's dnsmasq serving the same bridge.
    const strayDir = path.join(root, "stray");
    await mkdir(strayDir, { mode: 0o755 });
    await writeFile(path.join(strayDir, "hosts"), "");
    const stray = a.dhcp.args().map((x) => x.replace(path.join(dirA, "net", "dhcp"), strayDir));
    await run("ip", ["netns", "exec", netns, "dnsmasq", ...stray]);
    expect(await dnsmasqs()).toHaveLength(2);

    const log = lines();
    await new NetnsGuestNetwork(opts(dirA), { logger: log }).ensure();
    expect((await dnsmasqs()).map((p) => p.pid)).toEqual([kept]);
    const warn = log.seen.filter((l) => l.level === "warn");
    expect(warn).toHaveLength(1);
    expect(warn[0].msg).toMatch(/^stopped 1 stray dnsmasq in the guest namespace/);
    expect(warn[0].obj.pid_files).toEqual([path.join(strayDir, "dnsmasq.pid")]);
  });

  test("takeover is refused while the owner's cvmd runs or its guests run; then leaves the namespace to the new data dir with one dnsmasq", async () => {
    const aDhcp = (await dnsmasqs())[0].pid;
    const alive = new NetnsOwnership(ns, dirB, (d) => (d === dirA ? { pid: 4242, role: "cvmd" } : null));
    await expect(alive.takeOver()).rejects.toThrow(`network namespace ${netns} is in use by cvmd (pid 4242) of data dir ${dirA}: stop it first, then run the takeover again`);

    // A stand-in for one of A's guests: a process in the namespace that is not dnsmasq.
    const guest = spawn("ip", ["netns", "exec", netns, "sleep", "300"], { stdio: "ignore" });
    others.push({ cleanup: async () => void guest.kill("SIGKILL") });
    for (let i = 0; i < 50 && (await nsProcesses(ns)).length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    const takeover = new NetnsOwnership(ns, dirB);
    await expect(takeover.takeOver()).rejects.toThrow(/still runs 1 process\(es\) besides dnsmasq \(pid \d+ sleep\), the previous owner's guests/);
    expect(await isAlive(aDhcp)).toBe(true);
    guest.kill("SIGKILL");
    await new Promise((r) => guest.once("exit", r));

    const r = await takeover.takeOver();
    expect(r).toEqual({ previous: { dataDir: dirA, complete: true }, outcome: "taken-over", stoppedDnsmasq: [aDhcp] });
    expect(await isAlive(aDhcp)).toBe(false);
    // The namespace was made anew: A's tap and the veth pair (host end included) went with the old one.
    await expect(run("ip", ["-n", netns, "link", "show", "tap2"])).rejects.toThrow(/does not exist/);
    await expect(run("ip", ["link", "show", opts(dirA).hostVeth])).rejects.toThrow(/does not exist/);
    expect(await takeover.owner()).toEqual({ dataDir: dirB, complete: true });
    expect(await takeover.takeOver()).toMatchObject({ outcome: "already-ours" });

    const b = new NetnsGuestNetwork(opts(dirB));
    await b.ensure();
    await b.attach({ instanceId: "guest-of-b" });
    const left = await dnsmasqs();
    expect(left.map((p) => p.pid)).toEqual([await b.dhcp.pid()]);
    expect(left[0].argv).toContain(`--pid-file=${b.dhcp.pidFile}`);
    // And now A is the one refused.
    await expect(new NetnsGuestNetwork(opts(dirA), { ownerLiveness: () => null }).ensure()).rejects.toThrow(`belongs to data dir ${dirB}, whose cvmd is not running, not to ${dirA}`);
  });

  test("two data dirs claiming a fresh namespace at the same moment: exactly one gets it", async () => {
    const fresh = new Netns(`${netns}r`);
    others.push({ cleanup: () => fresh.delete() });
    const claims = await Promise.allSettled([dirA, dirB].map((d) => new NetnsOwnership(fresh, d).claim(() => false)));
    expect(claims.map((c) => c.status).sort()).toEqual(["fulfilled", "rejected"]);
    const won = claims.findIndex((c) => c.status === "fulfilled");
    expect((claims[won] as PromiseFulfilledResult<string>).value).toBe("created");
    expect((claims[1 - won] as PromiseRejectedResult).reason).toBeInstanceOf(NetnsOwnedError);
    expect(await new NetnsOwnership(fresh, dirA).owner()).toEqual({ dataDir: [dirA, dirB][won], complete: true });
  });
});
