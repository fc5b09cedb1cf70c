import { describe, expect, test } from "vitest";
import { AGENT_CHANNELS, guestProfile } from "./agent-channel.js";

describe("guest side of the profile table", () => {
  test("the plain profile's virtio-serial port present: plain, else a TD on vsock", () => {
    expect(guestProfile((p) => p === "/dev/virtio-ports/org.cvm.agent.0")).toBe("plain");
    expect(guestProfile((p) => p === "/dev/vsock")).toBe("tdx");
    expect(guestProfile(() => false)).toBe("tdx");
    expect(AGENT_CHANNELS[guestProfile(() => false)]).toEqual({ kind: "vsock", port: 1024, guestDevice: "/dev/vsock" });
  });
});
