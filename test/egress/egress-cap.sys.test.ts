import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NftEgressFirewall } from "../../host/net/egress-firewall.js";
import { NftCommandRunner } from "../../host/net/nft-runner.js";
import { run } from "../../shared/util/run.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { NetnsGuestDriver } from "../support/netns-guest-driver.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { prerequisites } from "../support/prerequisites.js";

const SENDER = fileURLToPath(new URL("../../host/net/testdata/egress-traffic.mjs", import.meta.url));
const why = prerequisites("the egress cap test", { root: true, tools: [["nft", ["--version"]]] });

const CAP = 3_000_000;
const PAYLOAD = 1000; // 1028 bytes counted per packet over IPv4
const PER_PACKET = PAYLOAD + 28;

describe.skipIf(why !== null)("5 GB cap, scaled down: exact in the kernel, visible in the API", () => {
  const hostNs = `cvmt-h${process.pid}`;
  const table = `cvm_egress_t${process.pid}`;
  const dir = tempDir();
  let firewall: NftEgressFirewall;
  let driver: NetnsGuestDriver;
  let d: TestDaemon;
  let key: string;

  const start = () =>
    startTestDaemon({ dataDir: dir.path, driver, egressFirewall: firewall, env: { CVM_EGRESS_LIMIT_BYTES: String(CAP), CVM_EGRESS_POLL_SECONDS: "1" } });
  const send = (ns: string, host: string, count: number) =>
    run("ip", ["netns", "exec", ns, process.execPath, SENDER, "udp-send", host, "9", String(PAYLOAD), String(count), "16"], { timeoutMs: 60_000 });
  const create = async () => {
    const r = await d.fetch("/v1/instances", { key, method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ public_key: sshKeyPair("ed25519").public }) });
    const name = r.body.data.name as string;
    for (let i = 0; i < 200; i++) {
      const g = await d.fetch(`/v1/instances/${name}`, { key });
      if (g.body.data.status === "ready") {
        const id = (await d.db.get<{ id: string }>("SELECT id FROM instances WHERE name = ?", [name]))!.id;
        return { name, id, guest: driver.guests.get(id)! };
      }
      await new Promise((res) => setTimeout(res, 25));
    }
    throw new Error("instance never became ready");
  };

  beforeAll(async () => {
    await run("ip", ["netns", "add", hostNs]);
    firewall = new NftEgressFirewall({ nft: new NftCommandRunner({ netns: hostNs }), table });
    driver = new NetnsGuestDriver({ hostNs, firewall, subnetOctet: 206 });
    d = await start();
    key = (await d.tenant("acme")).apiKey;
  });
  afterAll(async () => {
    await d?.close();
    await driver?.removeAll();
    await run("ip", ["netns", "del", hostNs]).catch(() => undefined);
    dir.remove();
  });

  it("stops a guest within one packet of the cap and shows the block in the API", async () => {
    const { name, guest } = await create();
    const rec0 = await d.fetch(`/v1/instances/${name}`, { key });
    expect(rec0.body.data.egress_limit_bytes).toBe(CAP);

    await send(guest.ns, guest.hostIp, Math.ceil((CAP * 1.5) / PER_PACKET));
    await d.egress!.pollOnce();

    const usage = (await d.fetch("/v1/usage", { key })).body.data.usage;
    expect(usage.egress_blocked).toBe(true);
    expect(usage.egress_block_applied_at).toMatch(/Z$/);
    expect(usage.egress_observed_at).toMatch(/Z$/);
    expect(usage.egress_bytes).toBeLessThanOrEqual(CAP);
    // Everything admitted under the cap, within one packet of it (ARP/ND from the link-up may add a few frames).
    expect(CAP - usage.egress_bytes).toBeLessThan(PER_PACKET + 200);

    const rec = (await d.fetch(`/v1/instances/${name}`, { key })).body.data;
    expect(rec.egress).toMatchObject({ blocked: true });
    const events = (await d.fetch(`/v1/instances/${name}/events`, { key })).body.data.events;
    expect(events.some((e: { type: string }) => e.type === "egress_blocked")).toBe(true);

    // Blocked means blocked: another burst does not move the admitted count.
    const before = rec.egress.bytes;
    await send(guest.ns, guest.hostIp, 500);
    await d.egress!.pollOnce();
    expect((await d.fetch(`/v1/instances/${name}`, { key })).body.data.egress.bytes).toBe(before);
  });

  it("a cvmd restart mid-transfer keeps counting; a host reboot (table flushed) does not grant a fresh cap", async () => {
    const { name, id, guest } = await create();
    await send(guest.ns, guest.hostIp, 1000); // ≈1.03 MB
    await d.egress!.pollOnce();
    const first = (await d.fetch(`/v1/instances/${name}`, { key })).body.data.egress.bytes as number;
    expect(first).toBeGreaterThanOrEqual(1000 * PER_PACKET);

    // Restart while traffic flows.
    const sending = send(guest.ns, guest.hostIp, 800);
    await d.close();
    d = await start();
    await sending;
    await d.egress!.pollOnce();
    const second = (await d.fetch(`/v1/instances/${name}`, { key })).body.data.egress.bytes as number;
    expect(second).toBeGreaterThanOrEqual(1800 * PER_PACKET);
    expect(second).toBeLessThan(1800 * PER_PACKET + 10_000);

    // Reboot: the kernel table is gone, the VM is (for this test) still there; the restart restores used bytes.
    await d.close();
    await run("ip", ["netns", "exec", hostNs, "nft", "delete", "table", "netdev", table]);
    d = await start();
    const restored = await firewall.sample();
    expect(restored.get(id)!.quotaUsedBytes).toBeGreaterThanOrEqual(second);
    // What is left of the cap is what the guest may still send, not a fresh 3 MB.
    await send(guest.ns, guest.hostIp, Math.ceil(CAP / PER_PACKET));
    await d.egress!.pollOnce();
    const after = (await d.fetch(`/v1/instances/${name}`, { key })).body.data.egress;
    expect(after.blocked).toBe(true);
    expect(after.bytes).toBeLessThanOrEqual(CAP);
  });

  it("traffic that does not cross the tap (the guest's loopback, standing in for the agent channel and gateway) is not counted", async () => {
    const { name, guest } = await create();
    await d.egress!.pollOnce();
    const base = ((await d.fetch(`/v1/instances/${name}`, { key })).body.data.egress?.bytes ?? 0) as number;
    await send(guest.ns, "127.0.0.1", 2000);
    await d.egress!.pollOnce();
    const after = ((await d.fetch(`/v1/instances/${name}`, { key })).body.data.egress?.bytes ?? 0) as number;
    expect(after - base).toBeLessThan(500);
    await send(guest.ns, guest.hostIp, 100); // control: the same sender through the tap is counted
    await d.egress!.pollOnce();
    expect((await d.fetch(`/v1/instances/${name}`, { key })).body.data.egress.bytes - after).toBeGreaterThanOrEqual(100 * PER_PACKET);
  });
});
