/**
 * Comparing a verified quote's measurements with the image manifest shipped with the measured image:
 *   { "expected_measurements": { "mrtd"?: hex|null, "rtmr0"?: hex|null, "rtmr1"?: hex|null, "rtmr2"?: hex|null, ...notes } }
 * Fail-closed: the comparison is ok only when every one of MRTD and RTMR0–2 was compared and matched,
 * or the caller waived by name the registers the manifest leaves out. A register with no expected
 * value is "unchecked", never a silent match: an image whose manifest cannot predict RTMR0 (it
 * measures the host's firmware configuration) passes only where someone decided to accept that.
 * RTMR3 is not in the manifest: it changes at run time and is checked by replaying the event log
 * (event-log.ts).
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

const isRegister = (k: string): k is ManifestMeasurement => (MANIFEST_MEASUREMENTS as readonly string[]).includes(k);

/** Validates a parsed manifest; other top-level fields (digests, image id, ...) are left alone. */
export function parseManifest(value: unknown): ImageManifest {
  if (typeof value !== "object" || value === null) throw new ManifestError("manifest must be a JSON object");
  const em = (value as Record<string, unknown>).expected_measurements;
  if (typeof em !== "object" || em === null || Array.isArray(em)) {
    throw new ManifestError("manifest lacks an expected_measurements object");
  }
  const out: Partial<Record<ManifestMeasurement, string>> = {};
  for (const [k, v] of Object.entries(em as Record<string, unknown>)) {
    // Build notes may sit beside the values (image-tool.mjs wrote some there); a register name that is
    // not one of the four (rtmr3, a typo such as rtmr01) is refused so that nobody believes it was checked.
    if (!isRegister(k)) {
      if (/^(mrtd|rtmr\d+)$/i.test(k)) throw new ManifestError(`expected_measurements.${k} is not one of ${MANIFEST_MEASUREMENTS.join(", ")}`);
      continue;
    }
    if (v === undefined || v === null) continue;
    if (typeof v !== "string" || !/^[0-9a-fA-F]{96}$/.test(v)) {
      throw new ManifestError(`expected_measurements.${k} must be 48 bytes of hex`);
    }
    out[k] = v.toLowerCase();
  }
  return { expected_measurements: out };
}

/**
 * A waiver list as the caller writes it ("rtmr0,rtmr1" or an array): names are checked, so a typo
 * cannot quietly waive nothing while the caller believes otherwise.
 */
export function parseWaivers(value: unknown): ManifestMeasurement[] {
  const items = typeof value === "string" ? value.split(",") : Array.isArray(value) ? value : null;
  if (!items) throw new ManifestError(`allow-unchecked must be a comma-separated list of ${MANIFEST_MEASUREMENTS.join(", ")}`);
  const out = new Set<ManifestMeasurement>();
  for (const raw of items) {
    const name = typeof raw === "string" ? raw.trim().toLowerCase() : raw;
    if (name === "") continue;
    if (typeof name !== "string" || !isRegister(name)) {
      throw new ManifestError(`allow-unchecked: ${JSON.stringify(raw)} is not one of ${MANIFEST_MEASUREMENTS.join(", ")}`);
    }
    out.add(name);
  }
  return MANIFEST_MEASUREMENTS.filter((n) => out.has(n));
}

export type MeasurementResult = "matched" | "mismatched" | "unchecked";

export interface MeasurementCheck {
  name: ManifestMeasurement;
  result: MeasurementResult;
  /** Null when the manifest has no value for this register. */
  expected: string | null;
  actual: string;
  /** The caller accepted this register being unchecked. */
  waived: boolean;
}

export interface MeasurementReport {
  /** No register mismatched and every unchecked one was waived. */
  ok: boolean;
  /** How many registers were actually compared (matched or mismatched). */
  checked: number;
  checks: MeasurementCheck[];
  matched: ManifestMeasurement[];
  mismatched: ManifestMeasurement[];
  unchecked: ManifestMeasurement[];
  /** The waivers the caller gave, whether or not they were needed. */
  allow_unchecked: ManifestMeasurement[];
  reason: string | null;
}

export function compareMeasurements(
  m: Pick<Measurements, "mrtd" | "rtmr0" | "rtmr1" | "rtmr2">,
  manifest: ImageManifest,
  opts: { allowUnchecked?: readonly ManifestMeasurement[] } = {},
): MeasurementReport {
  const waivers = MANIFEST_MEASUREMENTS.filter((n) => opts.allowUnchecked?.includes(n));
  const checks = MANIFEST_MEASUREMENTS.map((name): MeasurementCheck => {
    const expected = manifest.expected_measurements[name]?.toLowerCase() ?? null;
    const actual = m[name].toLowerCase();
    const result: MeasurementResult = expected === null ? "unchecked" : expected === actual ? "matched" : "mismatched";
    return { name, result, expected, actual, waived: result === "unchecked" && waivers.includes(name) };
  });
  const named = (r: MeasurementResult) => checks.filter((c) => c.result === r).map((c) => c.name);
  const mismatched = named("mismatched");
  const unchecked = named("unchecked");
  const unwaived = checks.filter((c) => c.result === "unchecked" && !c.waived).map((c) => c.name);
  const reasons: string[] = [];
  if (mismatched.length) reasons.push(`measurements differ from the manifest: ${mismatched.join(", ")}`);
  if (unwaived.length) {
    reasons.push(`the manifest has no expected value for ${unwaived.join(", ")}, so ${unwaived.length === 1 ? "it was" : "they were"} not checked (waive explicitly with allow-unchecked ${unwaived.join(",")})`);
  }
  return {
    ok: reasons.length === 0,
    checked: checks.length - unchecked.length,
    checks,
    matched: named("matched"),
    mismatched,
    unchecked,
    allow_unchecked: waivers,
    reason: reasons.length ? reasons.join("; ") : null,
  };
}

/** One line per register for human output: "mrtd matched, rtmr0 unchecked (waived), ...". */
export function describeChecks(r: Pick<MeasurementReport, "checks">): string {
  return r.checks.map((c) => `${c.name} ${c.result}${c.waived ? " (waived)" : ""}`).join(", ");
}
