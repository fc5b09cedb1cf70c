import { describe, expect, test } from "vitest";
import { socatVsockConnectArgs, VsockSocatConnector } from "./connectors.js";

describe("vsock connector command line", () => {
  test("dials the guest CID on the agent port through socat's stdio", () => {
    expect(socatVsockConnectArgs(17, 1024)).toEqual(["-d", "-d", "STDIO", "VSOCK-CONNECT:17:1024"]);
    const c = new VsockSocatConnector(42);
    expect(c.o.command).toBe("socat");
    expect(c.o.args).toEqual(["-d", "-d", "STDIO", "VSOCK-CONNECT:42:1024"]);
    expect(c.description).toBe("vsock:42:1024");
    expect(c.o.readyPattern.test("N starting data transfer loop with FDs [0,1] and [5,5]")).toBe(true);
  });

  test.each([0, 1, 2])("never dials reserved CID %i (2 is the host itself)", (cid) => {
    expect(() => socatVsockConnectArgs(cid, 1024)).toThrow(/reserved/);
    expect(() => new VsockSocatConnector(cid)).toThrow(/reserved/);
  });

  test.each([
    [-1, 1024],
    [3.5, 1024],
    [0xffffffff, 1024],
    [3, 0],
    [3, 2 ** 32],
  ])("rejects CID %s port %s", (cid, port) => {
    expect(() => socatVsockConnectArgs(cid, port)).toThrow(RangeError);
  });
});
