import { randomBytes } from "node:crypto";
import { join } from "node:path";
import type { Logger } from "pino";
import type { AdoptResult, Driver, DriverContext, HostServices, InstanceSpec, ReadyInfo } from "../../host/drivers/driver.js";
import { ProvisionError } from "../../host/drivers/failure-codes.js";
import { AgentLink } from "../../host/link/agent-link.js";
import { UnixSocketConnector } from "../../host/link/connectors.js";
import type { EgressFirewall } from "../../host/net/egress-firewall.js";
import type { AgentHello } from "../../shared/protocol/messages.js";
import { run } from "../../shared/util/run.js";

/**
 * TEST DOUBLE of the VM driver for hostile-guest tests: no VM. Each instance's "guest" is whatever
 * the test runs behind a Unix socket (`socketFor(name)`), typically a child process playing a root
 * tenant. Only the VM is doubled: the host end is the real AgentLink, wired as the QEMU driver wires
 * it (the daemon's security log, its egress sink, the link's own budgets), so an attack on the socket
 * is an attack on the real channel code inside the real daemon.
 *
 * With `egress`, each instance also gets the real nftables egress rules on a veth device in a
 * namespace the test owns, so the daemon runs its real egress monitor.
 */
export class SocketGuestDriver implements Driver {
  readonly name = "socket guest (test double)";
  readonly links = new Map<string, AgentLink>();
  private services: HostServices = {};
  private readonly devices = new Map<string, string>();

  constructor(
    private readonly o: {
      socketDir: string;
      logger: Logger;
      helloTimeoutMs?: number;
      egress?: { firewall: EgressFirewall; hostNs: string };
    },
  ) {}

  socketFor(instanceName: string): string {
    return join(this.o.socketDir, `${instanceName}.sock`);
  }

  bindHostServices(s: HostServices): void {
    this.services = s;
  }

  async create(spec: InstanceSpec, ctx: DriverContext): Promise<ReadyInfo> {
    if (this.o.egress) {
      const dev = `hg${randomBytes(3).toString("hex")}`;
      await ctx.saveRuntime({ tap: dev });
      // A veth pair inside the test's namespace stands in for the tap (the dummy driver may be absent).
      await run("ip", ["-n", this.o.egress.hostNs, "link", "add", dev, "type", "veth", "peer", "name", `${dev}p`]);
      this.devices.set(spec.id, dev);
      await this.o.egress.firewall.add({ id: spec.id, tap: dev, limitBytes: spec.egressLimitBytes });
    }
    const link = new AgentLink({
      connector: new UnixSocketConnector(this.socketFor(spec.name)),
      logger: this.o.logger,
      instanceId: spec.id,
      hostVersion: "cvmd",
      securityLog: this.services.securityLog,
      backoff: { initialMs: 50, maxMs: 2_000 },
    });
    link.on("egress", (s) => this.services.onGuestEgress?.(spec.id, { bytes: s.bytes, packets: s.packets, sampledAt: new Date(s.sampled_at) }));
    this.links.set(spec.id, link);
    link.start();
    await new Promise<AgentHello>((resolve, reject) => {
      const t = setTimeout(() => reject(new ProvisionError("agent_timeout", "no hello from the test's guest")), this.o.helloTimeoutMs ?? 20_000);
      ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
      link.once("hello", (h) => {
        clearTimeout(t);
        resolve(h);
      });
    });
    return { ssh: { host: "127.0.0.1", port: 22, user: "azureuser" } };
  }

  async adopt(spec: InstanceSpec): Promise<AdoptResult> {
    return this.links.has(spec.id) ? { alive: true, ready: Promise.resolve({ ssh: { host: "127.0.0.1", port: 22, user: "azureuser" } }) } : { alive: false, reason: "gone" };
  }

  async destroy(spec: InstanceSpec): Promise<void> {
    await this.links.get(spec.id)?.close();
    this.links.delete(spec.id);
    if (this.o.egress && this.devices.has(spec.id)) {
      await this.o.egress.firewall.remove(spec.id);
      await run("ip", ["-n", this.o.egress.hostNs, "link", "del", this.devices.get(spec.id)!]).catch(() => undefined);
      this.devices.delete(spec.id);
    }
  }

  async inspect(spec: InstanceSpec) {
    return { running: this.links.has(spec.id) };
  }

  async close(): Promise<void> {
    for (const l of this.links.values()) await l.close();
  }
}
