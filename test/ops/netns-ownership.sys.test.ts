import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Netns } from "../../host/net/netns.js";
import { isDnsmasq, nsProcesses } from "../../host/net/netns-owner.js";
import { tempDir } from "../support/daemon.js";
import { cvmctl, cvmdUntilExit, startCvmd, type CvmdProcess } from "../support/processes.js";
import { vmHostEnv } from "../support/vm-host.js";
import { prerequisites } from "../support/prerequisites.js";

const why = prerequisites("namespace ownership tests", { root: true, tools: [["ip", ["-V"]], ["nft", ["--version"]], ["dnsmasq", ["--version"]], ["qemu-system-x86_64", ["--version"]]] });

/**
 * The real cvmd with the QEMU driver (which builds the guest network at start; no guest is booted)
 * and the real cvmctl, two data dirs configured alike but for CVM_DATA_DIR: what the incident did
 * with fresh data dirs and one CVM_NETNS.
 */
describe.skipIf(why !== null)("two data dirs, one CVM_NETNS", () => {
  const base = tempDir("cvm-netns-own-");
  const tag = `o${process.pid.toString(36)}`;
  const a = vmHostEnv(join(base.path, "a"), join(base.path, "no-image"), tag, 221);
  const b = vmHostEnv(join(base.path, "b"), join(base.path, "no-image"), tag, 221);
  // TCG without the KVM probe: nothing boots here, and the probe would only cost time.
  const envA = { ...a.env, CVM_ACCEL: "tcg" };
  const envB = { ...b.env, CVM_ACCEL: "tcg" };
  const ns = new Netns(envA.CVM_NETNS);
  const dnsmasqs = async () => (await nsProcesses(ns)).filter(isDnsmasq);
  const running: CvmdProcess[] = [];
  afterAll(async () => {
    for (const d of running) await d.kill("SIGKILL");
    await a.cleanup();
    base.remove();
  });

  it("a second cvmd is refused with one line naming the owner; the takeover leaves one dnsmasq, the new owner's", async () => {
    const cvmdA = await startCvmd(envA);
    running.push(cvmdA);
    expect((await dnsmasqs()).map((p) => p.argv.find((x) => x.startsWith("--pid-file=")))).toEqual([`--pid-file=${envA.CVM_DATA_DIR}/net/dhcp/dnsmasq.pid`]);

    const refused = await cvmdUntilExit(envB);
    expect(refused.code, refused.stderr).toBe(78);
    expect(refused.stderr.trim().split("\n")).toEqual([
      `cvmd: network namespace ${envA.CVM_NETNS} (CVM_NETNS) belongs to data dir ${envA.CVM_DATA_DIR}, whose cvmd is running (pid ${cvmdA.child.pid}), not to ${envB.CVM_DATA_DIR}: ` +
        `set CVM_NETNS to another name, or stop that cvmd and then run \`cvmctl netns takeover\` with CVM_DATA_DIR=${envB.CVM_DATA_DIR} to take it over`,
    ]);
    expect(await dnsmasqs()).toHaveLength(1);

    const early = await cvmctl(["netns", "takeover"], envB);
    expect(early.code, early.stderr).toBe(1);
    expect(early.stderr.trim()).toBe(`cvmctl: network namespace ${envA.CVM_NETNS} is in use by cvmd (pid ${cvmdA.child.pid}) of data dir ${envA.CVM_DATA_DIR}: stop it first, then run the takeover again`);

    // Stopped, A leaves its dnsmasq running (by design, for its next start): B is still refused.
    expect(await cvmdA.kill("SIGTERM")).toBe(0);
    const stillRefused = await cvmdUntilExit(envB);
    expect(stillRefused.code).toBe(78);
    expect(stillRefused.stderr).toContain(`belongs to data dir ${envA.CVM_DATA_DIR}, whose cvmd is not running, not to ${envB.CVM_DATA_DIR}`);
    const status = await cvmctl(["netns"], envB);
    expect(status.stdout).toContain(`network namespace ${envA.CVM_NETNS} belongs to data dir ${envA.CVM_DATA_DIR} (cvmd not running)`);
    expect(status.stdout).toContain(`(DHCP of ${envA.CVM_DATA_DIR})`);

    const takeover = await cvmctl(["netns", "takeover"], envB);
    expect(takeover.code, takeover.stderr).toBe(0);
    expect(takeover.stdout).toContain(`network namespace ${envA.CVM_NETNS} taken over from data dir ${envA.CVM_DATA_DIR}: stopped 1 dnsmasq`);
    expect(await dnsmasqs()).toHaveLength(0);

    const cvmdB = await startCvmd(envB);
    running.push(cvmdB);
    const left = await dnsmasqs();
    expect(left).toHaveLength(1);
    expect(left[0].argv).toContain(`--pid-file=${envB.CVM_DATA_DIR}/net/dhcp/dnsmasq.pid`);

    // The roles have turned: now A is the one refused.
    const aRefused = await cvmdUntilExit(envA);
    expect(aRefused.code).toBe(78);
    expect(aRefused.stderr.trim().split("\n")).toHaveLength(1);
    expect(aRefused.stderr).toContain(`belongs to data dir ${envB.CVM_DATA_DIR}, whose cvmd is running (pid ${cvmdB.child.pid})`);
    expect(await cvmdB.kill("SIGTERM")).toBe(0);
  }, 240_000);
});
