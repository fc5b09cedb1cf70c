import { randomBytes } from "node:crypto";
import type { AdoptResult, Driver, DriverContext, InstanceSpec, ReadyInfo } from "../../host/drivers/driver.js";
import type { EgressFirewall } from "../../host/net/egress-firewall.js";
import { run } from "../../shared/util/run.js";

/**
 * TEST DOUBLE of the VM driver for network tests: each "guest" is a network namespace joined to the
 * host namespace by a veth pair whose host end plays the tap. Everything around it is real: the
 * egress firewall installs its nft rules on that device before the guest is handed over, exactly
 * as the QEMU driver does for a real tap.
 */
export class NetnsGuestDriver implements Driver {
  readonly name = "netns guest (test double)";
  readonly guests = new Map<string, { ns: string; tap: string; guestIp: string; hostIp: string }>();
  private next = 1;

  constructor(private readonly opts: { hostNs: string; firewall: EgressFirewall; subnetOctet: number }) {}

  async create(spec: InstanceSpec, ctx: DriverContext): Promise<ReadyInfo> {
    const i = this.next++;
    const tag = randomBytes(3).toString("hex");
    const g = { ns: `cvmt-g${tag}`, tap: `tp${tag}`, hostIp: `10.${this.opts.subnetOctet}.${i}.1`, guestIp: `10.${this.opts.subnetOctet}.${i}.2` };
    await ctx.saveRuntime({ tap: g.tap, ns: g.ns, hostIp: g.hostIp, guestIp: g.guestIp });
    await run("ip", ["netns", "add", g.ns]);
    await run("ip", ["-n", this.opts.hostNs, "link", "add", g.tap, "type", "veth", "peer", "name", "eth0", "netns", g.ns]);
    // Rules before the guest can send anything, as with a real tap before QEMU starts.
    await this.opts.firewall.add({ id: spec.id, tap: g.tap, limitBytes: spec.egressLimitBytes });
    await run("ip", ["-n", this.opts.hostNs, "addr", "add", `${g.hostIp}/30`, "dev", g.tap]);
    await run("ip", ["-n", this.opts.hostNs, "link", "set", g.tap, "up"]);
    await run("ip", ["-n", g.ns, "addr", "add", `${g.guestIp}/30`, "dev", "eth0"]);
    await run("ip", ["-n", g.ns, "link", "set", "eth0", "up"]);
    await run("ip", ["-n", g.ns, "link", "set", "lo", "up"]);
    this.guests.set(spec.id, g);
    return { ssh: { host: "127.0.0.1", port: 22, user: "azureuser" } };
  }

  async adopt(spec: InstanceSpec): Promise<AdoptResult> {
    const g = this.guests.get(spec.id);
    return g ? { alive: true, ready: Promise.resolve({ ssh: { host: "127.0.0.1", port: 22, user: "azureuser" } }) } : { alive: false, reason: "gone" };
  }

  async destroy(spec: InstanceSpec): Promise<void> {
    const g = this.guests.get(spec.id);
    if (!g) return;
    await this.opts.firewall.remove(spec.id);
    await run("ip", ["netns", "del", g.ns]).catch(() => undefined);
    this.guests.delete(spec.id);
  }

  async inspect(spec: InstanceSpec) {
    return { running: this.guests.has(spec.id) };
  }

  async removeAll(): Promise<void> {
    for (const g of this.guests.values()) await run("ip", ["netns", "del", g.ns]).catch(() => undefined);
    this.guests.clear();
  }
}
