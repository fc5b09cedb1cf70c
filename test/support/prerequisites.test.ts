import { afterEach, describe, expect, test, vi } from "vitest";
import { prerequisites, REQUIRE_ENV } from "./prerequisites.js";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";

// A path nothing creates: a fixed one such as /nonexistent can appear on a machine (a service user's home does).
const MISSING = join(tmpdir(), `cvm-missing-${randomBytes(8).toString("hex")}`);

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
    expect(prerequisites("the frob tests", { tools: [["cvm-no-such-tool", ["-V"]]], files: [MISSING] })).toBe("cvm-no-such-tool not installed");
    expect(warn.mock.calls).toEqual([["skipping the frob tests: cvm-no-such-tool not installed"]]);
  });

  test("unmet with CVM_REQUIRE_SYSTEM_TESTS=1: throws, so the file fails instead of skipping", () => {
    vi.stubEnv(REQUIRE_ENV, "1");
    expect(() => prerequisites("the frob tests", { files: [MISSING] })).toThrow(/^the frob tests: \S+ is missing \(CVM_REQUIRE_SYSTEM_TESTS=1/);
    expect(() => prerequisites("the frob tests", { other: "no TDX" })).toThrow(/no TDX/);
  });
});
