import { run } from "../../shared/util/run.js";
import type { GuestNetworkConfig } from "./guest-network-config.js";

export interface SshForward {
  instanceId: string;
  port: number;
  ip: string;
}

const q = (s: string) => JSON.stringify(s); // nft wants interface names quoted

/**
 * The host-namespace table: DNAT of <sshListen>:<port> to each guest's SSH port, masquerade on the veth (so replies
 * come back through the host and locally-originated 127.0.0.1 connections get a routable source), and a guard that
 * drops anything the namespace starts towards the host itself. The whole table is replaced in one `nft -f`
 * transaction (create, delete, recreate), so a half-applied rule set never exists.
 */
export function renderHostNat(cfg: GuestNetworkConfig, forwards: readonly SshForward[]): string {
  const t = `ip ${cfg.hostTable}`;
  const sorted = [...forwards].sort((a, b) => a.port - b.port);
  const dnat = sorted.map(
    (f) => `    ip daddr ${cfg.sshListen} tcp dport ${f.port} dnat to ${f.ip}:${cfg.guestSshPort} comment ${q(f.instanceId)}`,
  );
  const loopback = cfg.sshListen.startsWith("127.");
  const lines = [
    `table ${t}`,
    `delete table ${t}`,
    `table ${t} {`,
    // Connections from host processes (dev mode: ssh -p <port> 127.0.0.1) only pass the output hook.
    `  chain output {`,
    `    type nat hook output priority -100; policy accept;`,
    ...dnat,
    `  }`,
  ];
  if (!loopback) {
    lines.push(`  chain prerouting {`, `    type nat hook prerouting priority dstnat; policy accept;`, ...dnat, `  }`);
  }
  lines.push(
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    `    oifname ${q(cfg.hostVeth)} masquerade`,
    ...(cfg.nat ? [`    iifname ${q(cfg.hostVeth)} ip saddr ${cfg.pool} masquerade`] : []),
    `  }`,
    `  chain input {`,
    `    type filter hook input priority filter; policy accept;`,
    `    iifname ${q(cfg.hostVeth)} ct state established,related accept`,
    `    iifname ${q(cfg.hostVeth)} drop`,
    `  }`,
    `}`,
  );
  return lines.join("\n") + "\n";
}

/**
 * The namespace's own filter: guests may do DHCP with the namespace and answer forwarded SSH; with NAT on they may
 * also go out through the veth, but never to the host's end of it. Tenants never see each other: besides this,
 * every tap is an isolated bridge port.
 */
export function renderGuestFilter(cfg: GuestNetworkConfig, table = "cvm_guest"): string {
  const t = `inet ${table}`;
  return [
    `table ${t}`,
    `delete table ${t}`,
    `table ${t} {`,
    `  chain input {`,
    `    type filter hook input priority filter; policy drop;`,
    `    ct state established,related accept`,
    `    iifname "lo" accept`,
    `    iifname ${q(cfg.bridge)} udp dport 67 accept`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy drop;`,
    `    ct state established,related accept`,
    `    iifname ${q(cfg.nsVeth)} oifname ${q(cfg.bridge)} ip saddr ${cfg.hostLinkIp} tcp dport ${cfg.guestSshPort} accept`,
    ...(cfg.nat ? [`    iifname ${q(cfg.bridge)} oifname ${q(cfg.nsVeth)} ip daddr != ${cfg.hostLinkIp} accept`] : []),
    `  }`,
    `}`,
  ].join("\n") + "\n";
}

export async function applyNft(nftBinary: string, script: string, netnsExec?: (cmd: string, args: string[], input: string) => Promise<unknown>): Promise<void> {
  if (netnsExec) await netnsExec(nftBinary, ["-f", "-"], script);
  else await run(nftBinary, ["-f", "-"], { input: script, timeoutMs: 10_000 });
}

export async function deleteNftTable(nftBinary: string, family: string, table: string): Promise<void> {
  // "table X; delete table X" succeeds whether or not X exists (nft 1.0.6 has no `destroy`).
  await run(nftBinary, ["-f", "-"], { input: `table ${family} ${table}\ndelete table ${family} ${table}\n`, timeoutMs: 10_000 });
}
