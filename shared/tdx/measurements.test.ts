import { describe, expect, test } from "vitest";
import { compareMeasurements, describeChecks, parseManifest, parseWaivers } from "./measurements.js";
import { loadFixture } from "./test/fixtures.js";
import { verifyQuoteSync } from "./verify.js";

const f = loadFixture("tdx-v4-uptodate");
const m = verifyQuoteSync(f.quote, f.collateral!, { at: f.expected.at_unix! }).measurements!;
const all = { mrtd: m.mrtd, rtmr0: m.rtmr0, rtmr1: m.rtmr1, rtmr2: m.rtmr2 };

describe("image manifest comparison (fail-closed)", () => {
  test("all four compared and matched: ok", () => {
    const r = compareMeasurements(m, parseManifest({ expected_measurements: { ...all, mrtd: m.mrtd.toUpperCase() } }));
    expect(r).toMatchObject({ ok: true, checked: 4, matched: ["mrtd", "rtmr0", "rtmr1", "rtmr2"], mismatched: [], unchecked: [], reason: null });
  });

  test("a register the manifest leaves null is unchecked, and unchecked is not ok", () => {
    const r = compareMeasurements(m, parseManifest({ expected_measurements: { ...all, rtmr0: null }, image: "x" }));
    expect(r.ok).toBe(false);
    expect(r.checked).toBe(3);
    expect(r.unchecked).toEqual(["rtmr0"]);
    expect(r.checks.find((c) => c.name === "rtmr0")).toEqual({ name: "rtmr0", result: "unchecked", expected: null, actual: m.rtmr0, waived: false });
    expect(r.reason).toMatch(/no expected value for rtmr0.*allow-unchecked rtmr0/);
  });

  test("nothing compared is never ok (the old behaviour said ok with 0 checks)", () => {
    const r = compareMeasurements(m, parseManifest({ expected_measurements: {} }));
    expect(r).toMatchObject({ ok: false, checked: 0, unchecked: ["mrtd", "rtmr0", "rtmr1", "rtmr2"] });
  });

  test("a named waiver makes that unchecked register acceptable, and only that one", () => {
    const manifest = parseManifest({ expected_measurements: { mrtd: m.mrtd, rtmr2: m.rtmr2 } });
    const partial = compareMeasurements(m, manifest, { allowUnchecked: ["rtmr0"] });
    expect(partial.ok).toBe(false);
    expect(partial.reason).toMatch(/no expected value for rtmr1, so it was not checked/);
    const both = compareMeasurements(m, manifest, { allowUnchecked: ["rtmr1", "rtmr0"] });
    expect(both).toMatchObject({ ok: true, allow_unchecked: ["rtmr0", "rtmr1"], unchecked: ["rtmr0", "rtmr1"], matched: ["mrtd", "rtmr2"] });
    expect(describeChecks(both)).toBe("mrtd matched, rtmr0 unchecked (waived), rtmr1 unchecked (waived), rtmr2 matched");
  });

  test("a waiver never excuses a mismatch", () => {
    const r = compareMeasurements(m, parseManifest({ expected_measurements: { ...all, rtmr1: "00".repeat(48) } }), { allowUnchecked: ["rtmr1"] });
    expect(r.ok).toBe(false);
    expect(r.mismatched).toEqual(["rtmr1"]);
    expect(r.checks.find((c) => c.name === "rtmr1")).toMatchObject({ result: "mismatched", waived: false });
    expect(r.reason).toBe("measurements differ from the manifest: rtmr1");
  });

  test("malformed manifests are refused", () => {
    expect(() => parseManifest({})).toThrow(/expected_measurements/);
    expect(() => parseManifest({ expected_measurements: { rtmr3: "00".repeat(48) } })).toThrow(/rtmr3/);
    expect(() => parseManifest({ expected_measurements: { mrtd: "abc" } })).toThrow(/48 bytes/);
    expect(() => parseManifest({ expected_measurements: { rtmr01: "00".repeat(48) } })).toThrow(/rtmr01 is not one of/);
    // build notes beside the values are not registers and are left alone
    expect(parseManifest({ expected_measurements: { rtmr2: m.rtmr2, notes: "x", events: {} } })).toEqual({ expected_measurements: { rtmr2: m.rtmr2 } });
  });

  test("waiver lists: names are checked, order and case do not matter", () => {
    expect(parseWaivers("RTMR1, rtmr0")).toEqual(["rtmr0", "rtmr1"]);
    expect(parseWaivers(["mrtd"])).toEqual(["mrtd"]);
    expect(parseWaivers("")).toEqual([]);
    expect(() => parseWaivers("rtmr3")).toThrow(/"rtmr3" is not one of mrtd, rtmr0, rtmr1, rtmr2/);
    expect(() => parseWaivers("rtmr0,rmtr1")).toThrow(/rmtr1/);
    expect(() => parseWaivers(7)).toThrow(/comma-separated/);
  });
});
