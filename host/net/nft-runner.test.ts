import { describe, expect, test } from "vitest";
import { RunError } from "../../shared/util/run.js";
import { NftCommandRunner, isNftNotFound } from "./nft-runner.js";

// stderr texts as nft 1.0.6 and iproute2 print them.
const listMissing = "Error: No such file or directory\nlist table netdev nosuch\n                  ^^^^^^\n";
const deleteMissing = "Error: Could not process rule: No such file or directory\ndelete table netdev x\n                    ^\n";
const nsMissing = 'Cannot open network namespace "nosuchns": No such file or directory\n';

describe("isNftNotFound", () => {
  test("recognises nft's ENOENT for list and delete", () => {
    expect(isNftNotFound(new RunError("nft", [], 1, listMissing, ""))).toBe(true);
    expect(isNftNotFound(new RunError("nft", [], 1, deleteMissing, ""))).toBe(true);
  });
  test("does not mistake a missing namespace, a missing binary or a syntax error for it", () => {
    expect(isNftNotFound(new RunError("ip", [], 1, nsMissing, ""))).toBe(false);
    expect(isNftNotFound(new RunError("nft", [], "ENOENT", "", ""))).toBe(false);
    expect(isNftNotFound(new RunError("nft", [], 1, "Error: syntax error, unexpected newline\n", ""))).toBe(false);
  });
});

describe("NftCommandRunner", () => {
  test("refuses a namespace name that is not plain", () => {
    expect(() => new NftCommandRunner({ netns: "../etc" })).toThrow(/namespace/);
    expect(() => new NftCommandRunner({ netns: "a b" })).toThrow(/namespace/);
  });
  test("runs the given binary and surfaces its failure with stderr", async () => {
    // `false` stands in for nft: the point is the argument vector and the error path, not nft itself.
    const r = new NftCommandRunner({ nftPath: "false" });
    await expect(r.run(["list", "tables"])).rejects.toBeInstanceOf(RunError);
    const echo = new NftCommandRunner({ nftPath: "echo" });
    expect(await echo.run(["-j", "list", "table", "netdev", "t"])).toBe("-j list table netdev t\n");
  });
});
