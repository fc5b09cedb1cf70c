import { spawn, type ChildProcess } from "node:child_process";

import type { GuestAttachment, NetnsGuestNetwork } from "../../host/net/guest-network.js";
import { run } from "../../shared/util/run.js";

export interface GuestStandIn {
  ns: string;
  att: GuestAttachment;
  /** A stand-in sshd on port 22 that answers with the guest's name, so a forward's destination is visible. */
  sshd: ChildProcess;
  remove(): Promise<void>;
}

/**
 * TEST DOUBLE of a guest VM on cvmd's real guest network: a network namespace whose eth0 is the peer of a veth that
 * takes the tap's name in cvmd's namespace, so attach() finds the link and installs its real guard, bridge port, FDB,
 * neighbour entry, DHCP entry and SSH forward on it. The guest configures itself as DHCP would configure a VM.
 */
export async function attachStandIn(network: NetnsGuestNetwork, o: { name: string; instanceId: string; index: number }): Promise<GuestStandIn> {
  const ns = o.name;
  await run("ip", ["netns", "add", ns]);
  await run("ip", ["-n", network.cfg.netns, "link", "add", `tap${o.index}`, "type", "veth", "peer", "name", "eth0", "netns", ns]);
  const att = await network.attach({ instanceId: o.instanceId, index: o.index });
  await run("ip", ["-n", ns, "link", "set", "eth0", "address", att.mac]);
  await run("ip", ["-n", ns, "addr", "add", `${att.ip}/${network.cfg.poolCidr.prefix}`, "dev", "eth0"]);
  await run("ip", ["-n", ns, "link", "set", "lo", "up"]);
  await run("ip", ["-n", ns, "link", "set", "eth0", "up"]);
  await run("ip", ["-n", ns, "route", "add", "default", "via", network.cfg.bridgeIp]);
  const sshd = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", `require("net").createServer((s) => s.end(${JSON.stringify(o.instanceId + "\n")})).listen(22)`], {
    stdio: "ignore",
  });
  return {
    ns,
    att,
    sshd,
    async remove() {
      sshd.kill();
      await run("ip", ["netns", "del", ns]).catch(() => undefined);
    },
  };
}
