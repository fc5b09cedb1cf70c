import { afterEach, describe, expect, test, vi } from "vitest";
import { prerequisites, REQUIRE_ENV } from "./prerequisites.js";

describe("prerequisites", () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.restoreAllMocks();
  });

  test("met: null, and nothing printed", () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    expect(prerequisites("x", { tools: [["node", ["--version"]]], files: ["/"] })).toBeNull();
    expect(warn).not.toHaveBeenCalled();
  });

  test("unmet locally: one line naming the test and the first missing thing, and the reason back", () => {
    vi.stubEnv(REQUIRE_ENV, "");
    const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
    expect(prerequisites("the frob tests", { tools: [["cvm-no-such-tool", ["-V"]]], files: ["/nonexistent"] })).toBe("cvm-no-such-tool not installed");
    expect(warn.mock.calls).toEqual([["skipping the frob tests: cvm-no-such-tool not installed"]]);
  });

  test("unmet with CVM_REQUIRE_SYSTEM_TESTS=1: throws, so the file fails instead of skipping", () => {
    vi.stubEnv(REQUIRE_ENV, "1");
    expect(() => prerequisites("the frob tests", { files: ["/nonexistent"] })).toThrow(/^the frob tests: \/nonexistent is missing \(CVM_REQUIRE_SYSTEM_TESTS=1/);
    expect(() => prerequisites("the frob tests", { other: "no TDX" })).toThrow(/no TDX/);
  });
});
