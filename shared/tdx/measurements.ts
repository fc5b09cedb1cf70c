/**
 * Comparing a verified quote's measurements with the image manifest shipped with the measured image:
 *   { "expected_measurements": { "mrtd"?: hex, "rtmr0"?: hex, "rtmr1"?: hex, "rtmr2"?: hex } }
 * A value that is absent is reported as "not_checked", never silently as a match. RTMR3 is not in the
 * manifest: it changes at run time and is checked by replaying the event log (event-log.ts).
 */
import type { Measurements } from "./verify.js";

export const MANIFEST_MEASUREMENTS = ["mrtd", "rtmr0", "rtmr1", "rtmr2"] as const;
export type ManifestMeasurement = (typeof MANIFEST_MEASUREMENTS)[number];

export interface ImageManifest {
  expected_measurements: Partial<Record<ManifestMeasurement, string>>;
}

export class ManifestError extends Error {
  override name = "ManifestError";
}

/** Validates a parsed manifest; other top-level fields (digests, image id, ...) are left alone. */
export function parseManifest(value: unknown): ImageManifest {
  if (typeof value !== "object" || value === null) throw new ManifestError("manifest must be a JSON object");
  const em = (value as Record<string, unknown>).expected_measurements;
  if (typeof em !== "object" || em === null || Array.isArray(em)) {
    throw new ManifestError("manifest lacks an expected_measurements object");
  }
  const out: Partial<Record<ManifestMeasurement, string>> = {};
  for (const [k, v] of Object.entries(em as Record<string, unknown>)) {
    if (!(MANIFEST_MEASUREMENTS as readonly string[]).includes(k)) {
      throw new ManifestError(`expected_measurements.${k} is not one of ${MANIFEST_MEASUREMENTS.join(", ")}`);
    }
    if (v === undefined || v === null) continue;
    if (typeof v !== "string" || !/^[0-9a-fA-F]{96}$/.test(v)) {
      throw new ManifestError(`expected_measurements.${k} must be 48 bytes of hex`);
    }
    out[k as ManifestMeasurement] = v.toLowerCase();
  }
  return { expected_measurements: out };
}

export type MeasurementResult = "match" | "mismatch" | "not_checked";

export interface MeasurementCheck {
  name: ManifestMeasurement;
  result: MeasurementResult;
  expected?: string;
  actual: string;
}

export interface MeasurementReport {
  /** False when any checked value differs; true also when nothing was checked (see checked). */
  ok: boolean;
  checked: number;
  checks: MeasurementCheck[];
  mismatches: ManifestMeasurement[];
}

export function compareMeasurements(m: Pick<Measurements, "mrtd" | "rtmr0" | "rtmr1" | "rtmr2">, manifest: ImageManifest): MeasurementReport {
  const checks = MANIFEST_MEASUREMENTS.map((name): MeasurementCheck => {
    const expected = manifest.expected_measurements[name];
    const actual = m[name].toLowerCase();
    if (expected === undefined) return { name, result: "not_checked", actual };
    return { name, result: expected.toLowerCase() === actual ? "match" : "mismatch", expected: expected.toLowerCase(), actual };
  });
  const mismatches = checks.filter((c) => c.result === "mismatch").map((c) => c.name);
  return { ok: mismatches.length === 0, checked: checks.filter((c) => c.result !== "not_checked").length, checks, mismatches };
}
