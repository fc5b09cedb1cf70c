import { describe, expect, test } from "vitest";
import { compareMeasurements, parseManifest } from "./measurements.js";
import { loadFixture } from "./test/fixtures.js";
import { verifyQuoteSync } from "./verify.js";

const f = loadFixture("tdx-v4-uptodate");
const m = verifyQuoteSync(f.quote, f.collateral!, { at: f.expected.at_unix! }).measurements!;

describe("image manifest comparison", () => {
  test("all four match", () => {
    const r = compareMeasurements(m, parseManifest({ expected_measurements: { mrtd: m.mrtd.toUpperCase(), rtmr0: m.rtmr0, rtmr1: m.rtmr1, rtmr2: m.rtmr2 } }));
    expect(r).toMatchObject({ ok: true, checked: 4, mismatches: [] });
  });

  test("absent values are reported as not checked", () => {
    const r = compareMeasurements(m, parseManifest({ expected_measurements: { mrtd: m.mrtd }, image: "x" }));
    expect(r.checked).toBe(1);
    expect(r.checks.filter((c) => c.result === "not_checked").map((c) => c.name)).toEqual(["rtmr0", "rtmr1", "rtmr2"]);
  });

  test("a mismatch names the measurement", () => {
    const r = compareMeasurements(m, parseManifest({ expected_measurements: { rtmr1: "00".repeat(48) } }));
    expect(r.ok).toBe(false);
    expect(r.mismatches).toEqual(["rtmr1"]);
  });

  test("malformed manifests are refused", () => {
    expect(() => parseManifest({})).toThrow(/expected_measurements/);
    expect(() => parseManifest({ expected_measurements: { rtmr3: "00".repeat(48) } })).toThrow(/rtmr3/);
    expect(() => parseManifest({ expected_measurements: { mrtd: "abc" } })).toThrow(/48 bytes/);
  });
});
