import { expect, test } from "vitest";

import { compileGuestNetworkConfig } from "./guest-network-config.js";
import { renderGuestFilter, renderHostNat } from "./port-forward.js";

const cfg = compileGuestNetworkConfig({ stateDir: "/var/lib/cvm/net" });
const fwd = [
  { instanceId: "b", port: 22201, ip: "10.77.0.3" },
  { instanceId: "a", port: 22200, ip: "10.77.0.2" },
];

test("host table: replaced atomically, DNAT per guest in port order, masquerade on the veth, guard on input", () => {
  const s = renderHostNat(cfg, fwd);
  const lines = s.split("\n");
  expect(lines.slice(0, 3)).toEqual(["table ip cvm_nat", "delete table ip cvm_nat", "table ip cvm_nat {"]);
  const dnat = lines.filter((l) => l.includes("dnat"));
  expect(dnat.map((l) => l.trim())).toEqual([
    'ip daddr 127.0.0.1 tcp dport 22200 dnat to 10.77.0.2:22 comment "a"',
    'ip daddr 127.0.0.1 tcp dport 22201 dnat to 10.77.0.3:22 comment "b"',
  ]);
  expect(s).toContain("type nat hook output priority -100;");
  expect(s).not.toContain("prerouting"); // loopback listen: host processes only
  expect(s).toMatch(/oifname "cvm-h0" masquerade/);
  expect(s).toMatch(/iifname "cvm-h0" ct state established,related accept\n\s+iifname "cvm-h0" drop/);
  expect(s).not.toMatch(/ip saddr 10\.77\.0\.0\/24 masquerade/); // no NAT by default
});

test("host table: NAT masquerades the pool; a non-loopback listen address also DNATs in prerouting", () => {
  const c = compileGuestNetworkConfig({ stateDir: "/x", nat: true, sshListen: "192.0.2.10", hostTable: "t1" });
  const s = renderHostNat(c, fwd);
  expect(s).toMatch(/iifname "cvm-h0" ip saddr 10\.77\.0\.0\/24 masquerade/);
  expect(s).toMatch(/chain prerouting \{\n\s+type nat hook prerouting priority dstnat; policy accept;\n\s+ip daddr 192\.0\.2\.10 tcp dport 22200/);
  expect(s.split("\n")[0]).toBe("table ip t1");
});

test("an empty forward list still renders a valid, empty table", () => {
  expect(renderHostNat(cfg, [])).not.toContain("dnat");
});

test("namespace filter: default drop; DHCP in, forwarded SSH through; egress only with NAT and never to the host end", () => {
  const off = renderGuestFilter(cfg);
  expect(off).toMatch(/chain input \{\n\s+type filter hook input priority filter; policy drop;/);
  expect(off).toMatch(/iifname "cvmbr0" udp dport 67 accept/);
  expect(off).toMatch(/iifname "cvm-n0" oifname "cvmbr0" ip saddr 10\.77\.255\.0 tcp dport 22 accept/);
  expect(off).not.toMatch(/oifname "cvm-n0"/);
  expect(off).not.toContain("nat_forbidden");
});

test("namespace filter with NAT: out only to public unicast; the host end, host addresses and upstreams are refused", () => {
  const on = renderGuestFilter(compileGuestNetworkConfig({ stateDir: "/x", nat: true }), ["203.0.113.5", "198.51.100.0/28"]);
  const set = /elements = \{ ([^}]*) \}/.exec(on)![1].split(", ");
  for (const cls of ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/8"]) {
    expect(set).toContain(cls);
  }
  expect(set).toEqual(expect.arrayContaining(["10.77.255.0", "203.0.113.5", "198.51.100.0/28"]));
  expect(on).toMatch(
    /iifname "cvmbr0" oifname "cvm-n0" ip daddr @nat_forbidden counter name "nat_forbidden_drops" drop\n\s+iifname "cvmbr0" oifname "cvm-n0" meta nfproto ipv4 accept/,
  );
});
