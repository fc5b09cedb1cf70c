/**
 * The shapes of the /v1 tenant API, each one zod schema (snake_case on the wire, as the contract
 * spells them). From each come the TypeScript type (z.infer), the validation of what a client sends
 * (host/api/validate.ts turns the first issue into the contract's invalid_request) and the OpenAPI
 * document cvmd serves (host/api/openapi.ts), so the three cannot drift apart.
 *
 * Request fields carry messages written to follow the field's name: an issue at `limit` with the
 * message "must be an integer from 1 to 1000" reaches the client as "limit must be an integer from
 * 1 to 1000" with error.param "limit"; nested fields are named by path ("collateral.pck_crl must be
 * hex"). Response schemas are documented as the server writes them: every field listed, nothing else.
 */
import { z } from "zod";
import { Rtmr3Event } from "../protocol/messages.js";
import { parsePublicKey, PublicKeyError } from "../ssh/public-key.js";
import {
  Collateral,
  EventLogCheck,
  ExpectedMeasurements,
  MANIFEST_MEASUREMENTS,
  ManifestError,
  MAX_QUOTE_BYTES,
  MeasurementReport,
  Measurements,
  parseWaivers,
  PckFacts,
  QuoteFacts,
  TCB_STATUSES,
  TcbFacts,
  VERIFY_STAGES,
} from "../tdx/index.js";

export const INSTANCE_STATUSES = ["provisioning", "ready", "failed", "terminating", "terminated"] as const;
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];

/** The contract's error codes; their HTTP statuses and documentation are in host/api/errors.ts. */
export const API_ERROR_CODES = [
  "invalid_request",
  "unauthenticated",
  "forbidden",
  "not_found",
  "conflict",
  "rate_limited",
  "internal_error",
  "unavailable",
] as const;
export type ApiErrorCode = (typeof API_ERROR_CODES)[number];

/** The contract's wire format for timestamps: ISO 8601 UTC, second precision. */
export function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** An ISO 8601 UTC time as the server writes it (isoSeconds, or toISOString for verification times). */
const Time = () => z.iso.datetime();

export const INSTANCE_NAME_PATTERN = /^[a-z0-9]{8}$/;
const InstanceName = () => z.string().regex(INSTANCE_NAME_PATTERN);

/**
 * An issue whose message is already the whole sentence, field name included (validate.ts does not
 * put the path in front of it).
 */
export const COMPLETE_MESSAGE = { complete: true } as const;

// ---------------------------------------------------------------------------------------------------
// Envelopes

const RequestId = z.string().meta({ description: "Server-generated id of this HTTP request (also in X-Request-ID). Quote it when contacting support." });
const CorrelationId = z.string().nullable().meta({ description: "The X-Correlation-ID request header if one was sent, otherwise null." });

/** A success answer: `data` is the resource. */
export function dataEnvelope<T extends z.ZodType>(data: T) {
  return z.object({ request_id: RequestId, correlation_id: CorrelationId, data });
}

export const ApiErrorBody = z.object({
  code: z.enum(API_ERROR_CODES),
  message: z.string().meta({ description: "Safe to surface to end users." }),
  param: z.string().optional().meta({ description: "The request field the error is about, when it maps cleanly to one." }),
});
export type ApiErrorBody = z.infer<typeof ApiErrorBody>;

/** An error answer; `errorEnvelope(code)` narrows it to one code (each HTTP status has one). */
export const ErrorEnvelope = z.object({ request_id: RequestId, correlation_id: CorrelationId, error: ApiErrorBody });

export function errorEnvelope(code: ApiErrorCode) {
  return ErrorEnvelope.extend({ error: ApiErrorBody.extend({ code: z.literal(code) }) });
}

// ---------------------------------------------------------------------------------------------------
// Instances

export const SshEndpoint = z.object({ host: z.string(), port: z.int().min(1).max(65535), user: z.string() });
export type SshEndpoint = z.infer<typeof SshEndpoint>;

export const Instance = z.object({
  name: InstanceName(),
  status: z.enum(INSTANCE_STATUSES),
  agent: z.string(),
  hostname: z.string(),
  public_key: z.string(),
  inference_mode: z.string(),
  inference_model: z.string(),
  egress_limit_bytes: z.int().min(0),
  failure_code: z.string().nullable(),
  failure_message: z.string().nullable(),
  terminated_reason: z.literal("deleted_via_api").nullable(),
  created_at: Time(),
  ready_at: Time().nullable(),
  terminated_at: Time().nullable(),
  ssh: SshEndpoint.nullable().meta({ description: "Extension: how to reach the instance over SSH (null until ready)." }),
  egress: z
    .object({ bytes: z.int().min(0), observed_at: Time(), blocked: z.boolean(), block_applied_at: Time().nullable() })
    .nullable()
    .meta({ description: "Extension: egress the host counted for this instance against egress_limit_bytes (null before the first sample)." }),
});
export type InstanceRecord = z.infer<typeof Instance>;

export const InstancePage = z.object({
  instances: z.array(Instance),
  next_cursor: z.string().nullable().meta({ description: "The cursor of the next page; null only on the last page." }),
});

export const InstanceEvent = z.object({
  seq: z.int().min(0),
  type: z.string(),
  from_status: z.enum(INSTANCE_STATUSES).nullable(),
  to_status: z.enum(INSTANCE_STATUSES).nullable(),
  message: z.string().nullable(),
  at: Time(),
});
export type InstanceEvent = z.infer<typeof InstanceEvent>;

export const InstanceEvents = z.object({ events: z.array(InstanceEvent), next_cursor: z.null() });
export type InstanceEventList = z.infer<typeof InstanceEvents>;

const OneOf = <const T extends readonly [string, ...string[]]>(values: T, what: string) =>
  z.enum(values, { error: `must be ${what}` });

/** POST /v1/instances. The models are the operator's catalogue, so the schema is built for it. */
export function createInstanceBody(catalogue: { models: readonly string[]; default: string }) {
  const models = catalogue.models as [string, ...string[]];
  return z.strictObject({
    public_key: z
      .string({ error: (iss) => (iss.input === undefined || iss.input === null ? "is required" : "must be an ed25519 or ecdsa OpenSSH public key: must be a string") })
      .transform((v, ctx) => {
        try {
          return parsePublicKey(v).canonical;
        } catch (err) {
          if (!(err instanceof PublicKeyError)) throw err;
          ctx.issues.push({ code: "custom", message: `must be an ed25519 or ecdsa OpenSSH public key: ${err.message}`, input: v });
          return z.NEVER;
        }
      })
      .meta({ description: "One OpenSSH public key: ssh-ed25519 or ecdsa-sha2-nistp256/384/521. ssh-rsa is rejected." }),
    agent: OneOf(["openclaw"], '"openclaw"')
      .nullish()
      .meta({ default: "openclaw" })
      .transform((v) => v ?? "openclaw"),
    inference_mode: OneOf(["default_gateway"], '"default_gateway"')
      .nullish()
      .meta({ default: "default_gateway" })
      .transform((v) => v ?? "default_gateway"),
    inference_model: OneOf(models, `one of: ${models.join(", ")}`)
      .nullish()
      .meta({ default: catalogue.default })
      .transform((v) => v ?? catalogue.default),
  });
}
export type CreateInstanceBody = z.output<ReturnType<typeof createInstanceBody>>;

export const CreateInstanceHeaders = z.object({
  "Idempotency-Key": z
    .string()
    .regex(/^[\x21-\x7e]{1,255}$/, "must be 1 to 255 printable ASCII characters")
    .optional()
    .meta({ description: "Makes the create safe to retry: the same key with the same body answers the first answer again (Idempotent-Replayed: true); with another body, 409 conflict." }),
});

export const LIST_LIMIT_DEFAULT = 100;
export const LIST_LIMIT_MAX = 1000;

/** Where a page ends: the sort keys of its last instance. */
export interface ListPosition {
  createdAtMs: number;
  name: string;
}

/**
 * The list cursor: the sort keys of the last instance of the page. Opaque to clients (base64url
 * with a version tag), so its content can change without a contract change.
 */
export function encodeCursor(p: ListPosition): string {
  return "c1" + Buffer.from(`${p.createdAtMs}:${p.name}`).toString("base64url");
}

export function decodeCursor(cursor: string): ListPosition | null {
  if (cursor.length > 64 || !cursor.startsWith("c1")) return null;
  const m = /^(\d{1,15}):([a-z0-9]{8})$/.exec(Buffer.from(cursor.slice(2), "base64url").toString());
  return m ? { createdAtMs: Number(m[1]), name: m[2]! } : null;
}

const LIMIT_ERROR = `must be an integer from 1 to ${LIST_LIMIT_MAX}`;
const CURSOR_ERROR = "is not one this API returned as next_cursor";

export const ListInstancesQuery = z.object({
  limit: z
    .string({ error: LIMIT_ERROR })
    .regex(/^[0-9]{1,4}$/, LIMIT_ERROR)
    .transform(Number)
    .pipe(z.int().min(1, LIMIT_ERROR).max(LIST_LIMIT_MAX, LIMIT_ERROR))
    .optional()
    .meta({ description: `Instances per page, an integer from 1 to ${LIST_LIMIT_MAX}; default ${LIST_LIMIT_DEFAULT}.` }),
  cursor: z
    .string({ error: CURSOR_ERROR })
    .max(64, CURSOR_ERROR)
    .transform((v, ctx) => decodeCursor(v) ?? (ctx.issues.push({ code: "custom", message: CURSOR_ERROR, input: v }), z.NEVER))
    .optional()
    .meta({ description: "The next_cursor of the previous page; opaque." }),
});

export const InstancePath = z.object({ name: InstanceName() });

/** Headers every route reads. */
export const CommonHeaders = z.object({
  "X-Correlation-ID": z
    .string()
    .optional()
    .meta({ description: "Your id for the request, echoed in correlation_id and the X-Correlation-ID response header (at most 256 characters, control characters removed)." }),
});

// ---------------------------------------------------------------------------------------------------
// Images

/** An image id as image manifests write it; a path that does not match is simply not found. */
export const ImagePath = z.object({
  id: z
    .string()
    .regex(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/)
    .meta({ description: "An image id, as an attestation answer's image_id names it." }),
});

export const ImageManifest = z.object({
  image_id: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/).meta({ description: "SHA-256 of the manifest file's bytes, as `make image` prints it" }),
  manifest: z.record(z.string(), z.unknown()),
});

// ---------------------------------------------------------------------------------------------------
// Usage

export const Usage = z.object({
  pricing: z.object({
    period_start: Time(),
    period_end: Time(),
    subscription_cost_usd: z.string(),
    instance_hours_included: z.int().min(0),
    overage_per_hour_usd: z.string(),
  }),
  usage: z.object({
    instance_hours_used: z.number().min(0),
    inference_cost_usd: z.string(),
    egress_bytes: z.int().min(0),
    egress_limit_bytes: z.int().min(0),
    egress_observed_at: Time().nullable(),
    egress_blocked: z.boolean(),
    egress_block_applied_at: Time().nullable(),
  }),
});
export type UsageRecord = z.infer<typeof Usage>;

// ---------------------------------------------------------------------------------------------------
// Attestation

export const NONCE_MIN_BYTES = 16;
export const NONCE_MAX_BYTES = 64;
const HEX_PAIRS = /^(?:[0-9a-fA-F]{2})+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;

export const COLLATERAL_ORIGINS = ["request", "file", "pccs"] as const;
export type CollateralOrigin = (typeof COLLATERAL_ORIGINS)[number];

const TcbStatus = z.enum(TCB_STATUSES);
const Failure = z.object({ stage: z.enum([...VERIFY_STAGES, "report_data", "measurements"]), code: z.string() });
const nonceBytes = (iss: { input?: unknown }) => `must be ${NONCE_MIN_BYTES} to ${NONCE_MAX_BYTES} bytes, got ${String(iss.input).length / 2}`;

/** Registers accepted unchecked: "rtmr0,rtmr1" or a list, names as parseWaivers reads them. */
const Waivers = z
  .union([z.string(), z.array(z.string())], { error: `must be a comma-separated list of ${MANIFEST_MEASUREMENTS.join(", ")}` })
  .transform((v, ctx) => {
    try {
      return parseWaivers(v);
    } catch (e) {
      if (!(e instanceof ManifestError)) throw e;
      ctx.issues.push({ code: "custom", message: e.message.replace(/^allow-unchecked/, "allow_unchecked"), params: COMPLETE_MESSAGE, input: v });
      return z.NEVER;
    }
  });

export const AttestationQuery = z.object({
  nonce: z
    .string({ error: (iss) => (iss.input === undefined ? `is required (hex, ${NONCE_MIN_BYTES} to ${NONCE_MAX_BYTES} bytes)` : "must be an even number of hex digits") })
    .regex(HEX_PAIRS, "must be an even number of hex digits")
    .min(NONCE_MIN_BYTES * 2, { error: nonceBytes })
    .max(NONCE_MAX_BYTES * 2, { error: nonceBytes })
    .transform((v) => Buffer.from(v, "hex"))
    .meta({ description: `Your fresh random challenge, hex, ${NONCE_MIN_BYTES} to ${NONCE_MAX_BYTES} bytes.` }),
  allow_unchecked: Waivers.optional().meta({
    description: "Comma list of mrtd, rtmr0, rtmr1, rtmr2 you accept unchecked where the image manifest has no value (it never excuses a mismatch).",
  }),
});

const QUOTE_TEXT = "must be a base64 or hex string";
const AT_ERROR = "must be an ISO 8601 time with a zone (2025-07-19T10:00:34Z) or Unix seconds";
const REPORT_DATA_ERROR = "must be 64 bytes of hex";

export const VerifyQuoteBody = z
  .strictObject({
    quote: z
      .string({ error: (iss) => (iss.input === undefined || iss.input === null ? "is required (base64 or hex)" : QUOTE_TEXT) })
      .transform((v, ctx) => {
        // Hex when nothing but hex digits (even length), otherwise canonical base64 (standard
        // alphabet, padded); whitespace and line breaks are ignored.
        const text = v.replace(/\s+/g, "");
        const fail = (message: string) => (ctx.issues.push({ code: "custom", message, input: v }), z.NEVER);
        let bytes: Buffer;
        if (HEX_PAIRS.test(text)) bytes = Buffer.from(text, "hex");
        else if (text.length > 0 && BASE64.test(text)) bytes = Buffer.from(text, "base64");
        else return fail("is neither base64 nor hex");
        if (bytes.length === 0) return fail("is empty");
        if (bytes.length > MAX_QUOTE_BYTES) return fail(`exceeds ${MAX_QUOTE_BYTES} bytes`);
        return bytes;
      })
      .meta({ description: `The quote: hex if the string is only hex digits, otherwise standard padded base64. At most ${MAX_QUOTE_BYTES / 1024} KiB decoded.` }),
    collateral: Collateral.nullish().meta({ description: "Collateral to verify with; default the server's (CVM_COLLATERAL_FILE, then CVM_PCCS_URL)." }),
    at: z
      .union(
        [
          z.number({ error: AT_ERROR }).min(0, AT_ERROR).meta({ description: "Unix seconds" }),
          z.string({ error: AT_ERROR }).regex(/^\d{1,12}$/, AT_ERROR).meta({ description: "Unix seconds" }),
          z.string({ error: AT_ERROR }).regex(ISO_8601, AT_ERROR).meta({ description: "ISO 8601 with a zone" }),
        ],
        { error: AT_ERROR },
      )
      .transform((v, ctx) => {
        const d = typeof v === "number" ? new Date(v * 1000) : /^\d+$/.test(v) ? new Date(Number(v) * 1000) : new Date(v);
        return Number.isNaN(d.getTime()) ? (ctx.issues.push({ code: "custom", message: AT_ERROR, input: v }), z.NEVER) : d;
      })
      .nullish()
      .meta({ description: "Verification time; default now." }),
    report_data: z
      .string({ error: REPORT_DATA_ERROR })
      .regex(/^[0-9a-fA-F]{128}$/, REPORT_DATA_ERROR)
      .transform((v) => Buffer.from(v, "hex"))
      .nullish()
      .meta({ description: "Expected REPORTDATA (64 bytes hex); a difference makes ok false." }),
    expected_measurements: ExpectedMeasurements.nullish(),
    allow_unchecked: Waivers.nullish().meta({
      description: "Registers accepted unchecked where expected_measurements has no value (never excuses a mismatch); needs expected_measurements.",
    }),
  })
  .check((ctx) => {
    if (ctx.value.allow_unchecked?.length && !ctx.value.expected_measurements) {
      ctx.issues.push({ code: "custom", path: ["allow_unchecked"], message: "waives registers of expected_measurements, which is missing", input: ctx.value });
    }
  });

export const QuoteCheck = z.object({
  ok: z.boolean().meta({
    description:
      "Every check passed and the TCB status is one of accepted_statuses (the operator's CVM_ACCEPT_TCB_STATUS, default UpToDate); a DCAP-valid OutOfDate quote is ok=false with failure {stage: policy, code: tcb_status_not_accepted} unless the operator accepts it.",
  }),
  status: TcbStatus.nullable(),
  advisory_ids: z.array(z.string()),
  reason: z.string().nullable(),
  failure: Failure.nullable(),
  fmspc: z.string().nullable(),
  measurements: Measurements.nullable().meta({ description: "Fields of the TD report, present whenever the quote parses (trust them only when ok)." }),
  quote: QuoteFacts.nullable(),
  tcb: TcbFacts.nullable(),
  pck: PckFacts.nullable(),
  at: Time().meta({ description: "Verification time." }),
  collateral_source: z.enum(COLLATERAL_ORIGINS).nullable(),
  accepted_statuses: z.array(TcbStatus).meta({ description: "The TCB statuses this server accepts (CVM_ACCEPT_TCB_STATUS, default UpToDate)." }),
});
export type QuoteCheck = z.infer<typeof QuoteCheck>;

export const ReportDataCheck = z.object({
  ok: z.boolean(),
  expected: z.string(),
  actual: z.string().nullable().meta({ description: "REPORTDATA in the quote (null when the quote does not parse)." }),
  reason: z.string().nullable(),
});
export type ReportDataCheck = z.infer<typeof ReportDataCheck>;

/** POST /v1/attestation/verify's answer: the DCAP check and the comparisons the caller asked for. */
export const QuoteVerification = QuoteCheck.extend({
  report_data: ReportDataCheck.optional().meta({ description: "Only when report_data was given." }),
  manifest: z
    .union([MeasurementReport, z.object({ ok: z.literal(false), reason: z.string() })])
    .optional()
    .meta({ description: "Only when expected_measurements was given: the comparison, or why there was none." }),
});
export type QuoteVerification = z.infer<typeof QuoteVerification>;

export const ManifestCheck = MeasurementReport.partial().extend({ ok: z.boolean(), image_id: z.string().nullable(), reason: z.string().nullable() });
export type ManifestCheck = z.infer<typeof ManifestCheck>;

export const InstanceVerdict = z.object({
  ok: z.boolean().meta({ description: "Every check below passed (the quote's TCB status among accepted_statuses)." }),
  reason: z.string().nullable().meta({ description: 'The first failing check, as "<check>: <reason>".' }),
  status: TcbStatus.nullable(),
  advisory_ids: z.array(z.string()),
  fmspc: z.string().nullable(),
  tcb: TcbFacts.nullable(),
  at: Time(),
  collateral_source: z.enum(COLLATERAL_ORIGINS).nullable(),
  accepted_statuses: z.array(TcbStatus),
  allow_unchecked: z.array(z.enum(MANIFEST_MEASUREMENTS)).meta({ description: "Registers the caller accepted unchecked, whether or not that was needed." }),
  checks: z.object({
    quote: z.object({ ok: z.boolean(), reason: z.string().nullable(), failure: Failure.nullable() }),
    report_data: ReportDataCheck.extend({ agent_reported: z.string() }).meta({ description: "expected is recomputed by the host over the nonce and the host keys; actual is in the quote." }),
    measurements: ManifestCheck,
    event_log: EventLogCheck,
  }),
});
export type InstanceVerdict = z.infer<typeof InstanceVerdict>;

const AttestationBase = { name: InstanceName(), nonce: z.string().regex(HEX_PAIRS), event_log: z.array(Rtmr3Event) };

/** GET /v1/instances/{name}/attestation's answer: evidence and the host's verdict, or why there is none. */
export const InstanceAttestation = z.discriminatedUnion("available", [
  z.object({
    ...AttestationBase,
    available: z.literal(true),
    quote: z.string().regex(BASE64).meta({ description: "The quote, base64." }),
    report_data: z.string().meta({ description: "REPORTDATA as the agent computed it, hex." }),
    host_keys: z.array(z.string()).meta({ description: "The SSH host keys REPORTDATA binds." }),
    image_id: z.string().nullable(),
    measurements: Measurements.nullable(),
    verdict: InstanceVerdict,
  }),
  z.object({
    ...AttestationBase,
    available: z.literal(false).meta({ description: "The guest has no TDX: reason says why." }),
    reason: z.string(),
    measurements: z.null(),
    verdict: z.null(),
  }),
]);
export type InstanceAttestation = z.infer<typeof InstanceAttestation>;

// ---------------------------------------------------------------------------------------------------
// The document itself (GET /v1/openapi.json, not enveloped)

export const OpenApiDocument = z.looseObject({
  openapi: z.literal("3.1.0"),
  info: z.looseObject({ title: z.string(), version: z.string() }),
  paths: z.record(z.string(), z.looseObject({})),
  components: z.looseObject({ schemas: z.record(z.string(), z.looseObject({})) }),
});
