import { describe, expect, test } from "vitest";
import { socatVsockListenArgs } from "./transports.js";

describe("guest vsock bridge command line", () => {
  test("listens on the vsock port, forking per connection, forwarding to the agent socket", () => {
    expect(socatVsockListenArgs({ port: 1024, socketPath: "/run/cvm/agent.sock" })).toEqual([
      "-d",
      "-d",
      "VSOCK-LISTEN:1024,reuseaddr,fork",
      "UNIX-CONNECT:/run/cvm/agent.sock",
    ]);
  });

  test("rejects a bad port", () => {
    expect(() => socatVsockListenArgs({ port: 0, socketPath: "/x" })).toThrow(RangeError);
  });
});
