import { describe, expect, test } from "vitest";

import { linkLocalOf, renderTapGuard, renderTapUnguard, tapGuardRules } from "./tap-guard.js";

describe("tap guard", () => {
  test("link-local address from the MAC (modified EUI-64: universal/local bit flipped, ff:fe inserted)", () => {
    expect(linkLocalOf("52:54:0a:d5:00:02")).toBe("fe80::5054:aff:fed5:2");
    expect(linkLocalOf("00:00:00:00:00:00")).toBe("fe80::200:ff:fe00:0");
    expect(() => linkLocalOf("52:54:0a:d5:00")).toThrow(/not a MAC/);
  });

  test("every rule but the DHCP-client exception drops into the tap's counter; ND target compared as 128 bits", () => {
    const rules = tapGuardRules({ tap: "tap2", mac: "52:54:0a:d5:00:02", ipv4: "10.213.0.2" });
    expect(rules.filter((r) => !r.endsWith('counter name "spoofed_tap2" drop'))).toEqual([
      "ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
    ]);
    expect(rules).toContain('icmpv6 type nd-neighbor-advert @th,64,128 != 0xfe8000000000000050540afffed50002 counter name "spoofed_tap2" drop');
    expect(rules[0]).toBe('ether saddr != 52:54:0a:d5:00:02 counter name "spoofed_tap2" drop');
  });

  test("install keeps the counter (add, never delete), removal works whether or not it exists", () => {
    const s = renderTapGuard({ tap: "tap2", mac: "52:54:0a:d5:00:02", ipv4: "10.213.0.2" });
    expect(s).not.toContain("delete");
    expect(s).toContain('add chain netdev cvm_guard guard_tap2 { type filter hook ingress device "tap2" priority -600; policy accept; }');
    expect(renderTapUnguard("tap2")).toBe(
      "add table netdev cvm_guard\nadd chain netdev cvm_guard guard_tap2\ndelete chain netdev cvm_guard guard_tap2\n" +
        "add counter netdev cvm_guard spoofed_tap2\ndelete counter netdev cvm_guard spoofed_tap2\n",
    );
  });
});
