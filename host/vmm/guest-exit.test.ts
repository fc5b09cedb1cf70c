import { describe, expect, test } from "vitest";
import { guestExitFrom, vanished } from "./guest-exit.js";

describe("guest exits from QMP events", () => {
  test.each([
    ["guest-shutdown", "poweroff"],
    ["guest-reset", "reset"],
    ["guest-panic", "crash"],
    ["host-error", "crash"],
    ["host-qmp-quit", "stopped"],
    ["host-signal", "killed"],
    ["snapshot-load", "stopped"],
  ])("SHUTDOWN because of %s is a %s exit", (reason, kind) => {
    expect(guestExitFrom("g1", { event: "SHUTDOWN", data: { guest: reason.startsWith("guest"), reason } })).toEqual({ instanceId: "g1", kind, detail: reason });
  });

  test("a SHUTDOWN without a reason still ends the guest; other events do not", () => {
    expect(guestExitFrom("g1", { event: "SHUTDOWN" })).toEqual({ instanceId: "g1", kind: "stopped", detail: "unknown" });
    expect(guestExitFrom("g1", { event: "RESET", data: { guest: true, reason: "guest-reset" } })).toBeNull();
    expect(guestExitFrom("g1", { event: "POWERDOWN" })).toBeNull();
  });

  test("QEMU gone without a SHUTDOWN event was killed", () => {
    expect(vanished("g1")).toMatchObject({ instanceId: "g1", kind: "killed" });
  });
});
