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
 * Destinations a guest never reaches through NAT, whatever else is configured: everything that is not public unicast
 * (this host, its link-local metadata neighbours, private and carrier-grade NAT networks, multicast, reserved space).
 * Documentation ranges stay reachable on purpose: nothing routes them in production, and tests stand them up as
 * "the internet" inside their own namespaces.
 */
export const NON_PUBLIC_V4: readonly string[] = Object.freeze([
  "0.0.0.0/8", // this network
  "10.0.0.0/8", // RFC 1918
  "100.64.0.0/10", // carrier-grade NAT (RFC 6598)
  "127.0.0.0/8", // loopback
  "169.254.0.0/16", // link-local, cloud metadata services
  "172.16.0.0/12", // RFC 1918
  "192.0.0.0/24", // IETF protocol assignments
  "192.168.0.0/16", // RFC 1918
  "198.18.0.0/15", // benchmarking
  "224.0.0.0/4", // multicast
  "240.0.0.0/4", // reserved, limited broadcast
]);

/**
 * The namespace's own filter: guests may do DHCP with the namespace and answer forwarded SSH; with NAT on they may
 * also go out through the veth, but only to public unicast addresses: never to NON_PUBLIC_V4, nor to `blocked` (the
 * host's own addresses and the inference upstreams, which guests reach only through the metered gateway). Tenants
 * never see each other: besides this, every tap is an isolated bridge port.
 */
export function renderGuestFilter(cfg: GuestNetworkConfig, blocked: readonly string[] = [], table = "cvm_guest"): string {
  const t = `inet ${table}`;
  const forbidden = [...NON_PUBLIC_V4, cfg.hostLinkIp, ...blocked];
  return [
    `table ${t}`,
    `delete table ${t}`,
    `table ${t} {`,
    ...(cfg.nat
      ? [
          `  set nat_forbidden {`,
          `    type ipv4_addr; flags interval; auto-merge;`,
          `    elements = { ${forbidden.join(", ")} }`,
          `  }`,
          `  counter nat_forbidden_drops {}`,
        ]
      : []),
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
    ...(cfg.nat
      ? [
          `    iifname ${q(cfg.bridge)} oifname ${q(cfg.nsVeth)} ip daddr @nat_forbidden counter name "nat_forbidden_drops" drop`,
          `    iifname ${q(cfg.bridge)} oifname ${q(cfg.nsVeth)} meta nfproto ipv4 accept`,
        ]
      : []),
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
