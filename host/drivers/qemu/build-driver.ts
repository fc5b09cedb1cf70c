import { access } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { ImageCatalog } from "../../images/image-catalog.js";
import { NftEgressFirewall } from "../../net/egress-firewall.js";
import { NetnsGuestNetwork } from "../../net/guest-network.js";
import { NftCommandRunner } from "../../net/nft-runner.js";
import { upstreamAddresses } from "../../net/upstream-addresses.js";
import { lockHolder } from "../../ops/daemon-lock.js";
import type { VmConfig } from "../../vm-config.js";
import { probeAccel } from "../../vmm/accel-probe.js";
import { assertProfileConsistent } from "../../vmm/profile-check.js";
import { PROFILES } from "../../vmm/profiles.js";
import { QemuHypervisor } from "../../vmm/qemu-hypervisor.js";
import { tdxPreflight } from "../../vmm/tdx-preflight.js";
import type { Driver } from "../driver.js";
import { QemuDriver } from "./qemu-driver.js";
import { UnavailableDriver } from "../unavailable-driver.js";
import { run } from "../../../shared/util/run.js";

export interface BuiltDriver {
  driver: Driver;
  firewall?: NftEgressFirewall;
  qemu?: QemuDriver;
}

/**
 * Builds the QEMU driver from its configuration, or the unavailable driver with the reason when
 * this host cannot run it. The `tdx` profile refuses to start without its prerequisites: silently
 * falling back to a non-confidential guest would be worse than not starting.
 */
export async function buildQemuDriver(vm: VmConfig, dataDir: string, log: Logger, upstreamUrls: readonly string[] = []): Promise<BuiltDriver> {
  // Before any side effect (namespace, nft): a profile whose argv and agent channel disagree never runs.
  assertProfileConsistent(vm.profile, PROFILES);
  if (process.getuid?.() !== 0) return { driver: new UnavailableDriver("cvmd must run as root to manage network namespaces, taps and nftables") };
  // A vsock agent channel is dialed through socat (Node cannot open AF_VSOCK).
  const tools = ["qemu-system-x86_64", "nft", "ip", "dnsmasq", ...(PROFILES[vm.profile].channel.kind === "vsock" ? ["socat"] : [])];
  for (const tool of tools) {
    const found = await run("sh", ["-c", `command -v ${tool}`]).then(
      () => true,
      () => false,
    );
    if (!found) return { driver: new UnavailableDriver(`${tool} is not installed (run scripts/install-deps.sh)`) };
  }
  if (vm.profile === "tdx") {
    const pre = await tdxPreflight({ firmware: vm.tdxFirmware });
    if (!pre.ok) throw new Error(`CVM_PROFILE=tdx but this host cannot run TDX guests:\n  - ${pre.problems.join("\n  - ")}`);
  }
  const accel = vm.profile === "tdx" ? { accel: "kvm" as const, reason: "tdx" } : await probeAccel({ override: vm.accel });
  log.info({ accel: accel.accel, reason: accel.reason }, "QEMU acceleration chosen");
  await access(vm.imageDir).catch(() => log.warn({ image_dir: vm.imageDir }, "no guest image yet: instances will fail with image_unavailable until `make image` builds one"));

  const network = new NetnsGuestNetwork({
    stateDir: join(dataDir, "net"),
    owner: dataDir,
    netns: vm.netns,
    pool: vm.pool,
    link: vm.link,
    hostTable: vm.hostTable,
    hostVeth: vm.hostVeth,
    nsVeth: vm.nsVeth,
    nat: vm.nat,
    // With NAT on, guests must not reach an inference upstream except through the metered gateway.
    blockedDestinations: vm.nat ? await upstreamAddresses(upstreamUrls) : [],
    sshListen: vm.sshListen,
    sshPorts: vm.sshPorts,
  }, { logger: log.child({ component: "net" }), ownerLiveness: lockHolder });
  await network.ensure();
  // After the cap, SSH replies may only go to the veth's host end (forwarded SSH is masqueraded to it), DHCP and ARP
  // only to the bridge.
  const firewall = new NftEgressFirewall({
    nft: new NftCommandRunner({ netns: vm.netns }),
    table: vm.egressTable,
    afterBlock: { sshPeers: [network.cfg.hostLinkIp], gateways: [network.cfg.bridgeIp] },
  });
  const qemu = new QemuDriver({
    dataDir,
    hypervisor: new QemuHypervisor({
      dataDir,
      serialLogMaxBytes: vm.serialLogMaxKiB * 1024,
      securityLog: log.child({ stream: "security" }),
      logger: log.child({ component: "vmm" }),
    }),
    network,
    firewall,
    images: new ImageCatalog({ dir: vm.imageDir, logger: log.child({ component: "images" }) }),
    logger: log.child({ component: "qemu-driver" }),
    profile: vm.profile,
    accel: accel.accel,
    memoryMiB: vm.memoryMiB,
    vcpus: vm.vcpus,
    tdx: vm.profile === "tdx" ? { firmware: vm.tdxFirmware } : undefined,
    guestGatewayUrl: vm.guestGatewayUrl,
    timeouts: vm.timeouts,
  });
  return { driver: qemu, firewall, qemu };
}
