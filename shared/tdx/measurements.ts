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
import { z } from "zod";
import type { Measurements } from "./verify.js";

export const MANIFEST_MEASUREMENTS = ["mrtd", "rtmr0", "rtmr1", "rtmr2"] as const;
export type ManifestMeasurement = (typeof MANIFEST_MEASUREMENTS)[number];

export interface ImageManifest {
  expected_measurements: Partial<Record<ManifestMeasurement, string>>;
}

const isRegister = (k: string): k is ManifestMeasurement => (MANIFEST_MEASUREMENTS as readonly string[]).includes(k);
const registerValue = () =>
  z
    .string({ error: "must be 48 bytes of hex" })
    .regex(/^[0-9a-fA-F]{96}$/, "must be 48 bytes of hex")
    .nullish()
    .meta({ description: "48 bytes, hex; null or absent: no expected value (the register is unchecked)." });

/**
 * A manifest's `expected_measurements`: the four registers, each 48 bytes of hex or null. Build notes
 * may sit beside the values (image-tool.mjs wrote some there) and are dropped; a register name that
 * is not one of the four (rtmr3, a typo such as rtmr01) is refused so that nobody believes it was
 * checked. Issues name the key they are about (`path`), with messages such as "must be 48 bytes of hex".
 */
export const ExpectedMeasurements = z
  .object(Object.fromEntries(MANIFEST_MEASUREMENTS.map((k) => [k, registerValue()])) as Record<ManifestMeasurement, ReturnType<typeof registerValue>>, {
    error: "must be a JSON object",
  })
  .catchall(z.unknown())
  .check((ctx) => {
    for (const k of Object.keys(ctx.value)) {
      if (!isRegister(k) && /^(mrtd|rtmr\d+)$/i.test(k)) {
        ctx.issues.push({ code: "custom", path: [k], message: `is not one of ${MANIFEST_MEASUREMENTS.join(", ")}`, input: ctx.value });
      }
    }
  })
  .transform((v): ImageManifest["expected_measurements"] => {
    const out: ImageManifest["expected_measurements"] = {};
    for (const k of MANIFEST_MEASUREMENTS) if (typeof v[k] === "string") out[k] = v[k].toLowerCase();
    return out;
  })
  .meta({
    description:
      "An image manifest's expected_measurements: mrtd, rtmr0, rtmr1, rtmr2, each 48 bytes hex or null; other keys (build notes) are ignored, other register names refused.",
  });

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
  const r = ExpectedMeasurements.safeParse(em);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ManifestError(`expected_measurements.${issue.path.map(String).join(".")} ${issue.message}`);
  }
  return { expected_measurements: r.data };
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

export const MEASUREMENT_RESULTS = ["matched", "mismatched", "unchecked"] as const;
export type MeasurementResult = (typeof MEASUREMENT_RESULTS)[number];

const registers = () => z.array(z.enum(MANIFEST_MEASUREMENTS));

export const MeasurementCheck = z.object({
  name: z.enum(MANIFEST_MEASUREMENTS),
  result: z.enum(MEASUREMENT_RESULTS),
  expected: z.string().nullable().meta({ description: "Null when the manifest has no value for this register." }),
  actual: z.string(),
  waived: z.boolean().meta({ description: "The caller accepted this register being unchecked." }),
});
export type MeasurementCheck = z.infer<typeof MeasurementCheck>;

/** The fail-closed comparison of MRTD and RTMR0–2 with a manifest (served by the host's attestation API). */
export const MeasurementReport = z.object({
  ok: z.boolean().meta({ description: "No register mismatched and every unchecked one was waived (allow_unchecked)." }),
  checked: z.int().min(0).meta({ description: "How many registers were actually compared (matched or mismatched)." }),
  checks: z.array(MeasurementCheck),
  matched: registers(),
  mismatched: registers(),
  unchecked: registers(),
  allow_unchecked: registers().meta({ description: "The waivers the caller gave, whether or not they were needed." }),
  reason: z.string().nullable(),
});
export type MeasurementReport = z.infer<typeof MeasurementReport>;

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
