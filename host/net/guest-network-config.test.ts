import { expect, test } from "vitest";

import { renderDhcpHosts } from "./dhcp-server.js";
import { compileGuestNetworkConfig, guestIp, guestMac, guestTap, intToIp, ipToInt, lowestFree, parseCidr } from "./guest-network-config.js";

test("defaults: pool 10.77.0.0/24, bridge .1, veth /31, ports 22200-22999, NAT off; frozen", () => {
  const c = compileGuestNetworkConfig({ stateDir: "/var/lib/cvm/net" });
  expect(c).toMatchObject({
    netns: "cvm-guests", bridgeIp: "10.77.0.1", hostLinkIp: "10.77.255.0", nsLinkIp: "10.77.255.1",
    firstIndex: 2, lastIndex: 254, nat: false, sshListen: "127.0.0.1", sshPorts: { from: 22200, to: 22999 },
  });
  expect(Object.isFrozen(c)).toBe(true);
});

test("addresses, MACs and taps derive from the index", () => {
  const c = compileGuestNetworkConfig({ stateDir: "/x", pool: "10.1.8.0/22" });
  expect(c.lastIndex).toBe(1022);
  expect(guestIp(c, 2)).toBe("10.1.8.2");
  expect(guestIp(c, 300)).toBe("10.1.9.44");
  expect(() => guestIp(c, 1)).toThrow(RangeError);
  expect(() => guestIp(c, 1023)).toThrow(RangeError);
  expect(guestMac("10.1.9.44")).toBe("52:54:0a:01:09:2c");
  expect(guestTap(300)).toBe("tap300");
});

test("rejects bad configuration", () => {
  const bad = (o: object) => () => compileGuestNetworkConfig({ stateDir: "/x", ...o });
  expect(bad({ stateDir: "rel" })).toThrow(/absolute/);
  expect(bad({ pool: "10.77.0.1/24" })).toThrow(/host bits/);
  expect(bad({ pool: "10.77.0.0/30" })).toThrow(/between/);
  expect(bad({ link: "10.77.0.0/31" })).toThrow(/overlaps/);
  expect(bad({ link: "10.78.0.0/30" })).toThrow(/\/31/);
  expect(bad({ bridge: "a-name-that-is-too-long" })).toThrow(/interface name/);
  expect(bad({ sshPorts: { from: 80, to: 90 } })).toThrow(/sshPorts/);
  expect(bad({ netns: "a b" })).toThrow(/netns/);
});

test("ip helpers and allocation", () => {
  expect(intToIp(ipToInt("192.168.1.254"))).toBe("192.168.1.254");
  expect(() => ipToInt("1.2.3.256")).toThrow();
  expect(parseCidr("10.0.0.0/8")).toEqual({ network: ipToInt("10.0.0.0"), prefix: 8, size: 2 ** 24 });
  expect(lowestFree([2, 3, 5], 2, 10)).toBe(4);
  expect(lowestFree([2, 3], 2, 3)).toBeNull();
});

test("DHCP hosts file is sorted mac,ip lines", () => {
  expect(renderDhcpHosts([{ mac: "52:54:0a:4d:00:03", ip: "10.77.0.3" }, { mac: "52:54:0a:4d:00:02", ip: "10.77.0.2" }])).toBe(
    "52:54:0a:4d:00:02,10.77.0.2\n52:54:0a:4d:00:03,10.77.0.3\n",
  );
  expect(renderDhcpHosts([])).toBe("");
});
