import { chmodSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { run } from "../../shared/util/run.js";

/**
 * Environment for a real cvmd with the QEMU driver whose network objects (namespace, veth, nft
 * tables, SSH port range) are unique to this test run, plus the cleanup that removes them all.
 */
/** The settings every VM test host gets; named so that a spread (`{ ...env, CVM_ACCEL: "tcg" }`) keeps them typed. */
export interface VmHostEnv extends Record<string, string> {
  CVM_DATA_DIR: string;
  CVM_IMAGE_DIR: string;
  CVM_NETNS: string;
  CVM_NAT_TABLE: string;
}

export function vmHostEnv(dataDir: string, imageDir: string, tag: string, subnet: number): { env: VmHostEnv; cleanup(): Promise<void> } {
  mkdirSync(dataDir, { recursive: true });
  // dnsmasq drops to nobody and must traverse to its hosts file.
  for (let d = dataDir; d !== "/" && d.startsWith("/tmp/"); d = join(d, "..")) chmodSync(d, 0o711);
  const netns = `cvmt-${tag}`;
  const natTable = `cvm_nat_${tag}`;
  const env = {
    CVM_DATA_DIR: dataDir,
    CVM_IMAGE_DIR: imageDir,
    CVM_NETNS: netns,
    CVM_NAT_TABLE: natTable,
    CVM_EGRESS_TABLE: `cvm_egress_${tag}`,
    CVM_HOST_VETH: `vh${tag}`.slice(0, 15),
    CVM_NS_VETH: `vn${tag}`.slice(0, 15),
    CVM_GUEST_POOL: `10.${subnet}.0.0/24`,
    CVM_GUEST_LINK: `10.${subnet}.255.0/31`,
    CVM_SSH_PORTS: `${20000 + subnet * 100}-${20000 + subnet * 100 + 99}`,
    CVM_ACCEL: process.env.CVM_ACCEL ?? "auto",
    CVM_LOG_LEVEL: "info",
  };
  const cleanup = async () => {
    await run("ip", ["netns", "pids", netns]).then(
      ({ stdout }) => stdout.split("\n").filter(Boolean).forEach((p) => process.kill(Number(p), "SIGKILL")),
      () => undefined,
    );
    await run("ip", ["netns", "del", netns]).catch(() => undefined);
    await run("nft", ["delete", "table", "ip", natTable]).catch(() => undefined);
  };
  return { env, cleanup };
}
