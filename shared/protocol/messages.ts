/**
 * The host–agent message set, in one place for both sides.
 *
 * Every message is a CBOR map `{type, id?, re?, body}`: requests (host → agent) carry `id`, replies
 * carry `re` (the request's id), events carry neither. Keys are snake_case on the wire. Each message
 * is one zod schema; its TypeScript type is inferred from it, so what a side may send and what the
 * other side accepts cannot drift apart. Validation is strict, because everything from a guest is
 * attacker input: unknown types, unknown keys, wrong types and out-of-range values are all rejected
 * with a reason, which the receiving side logs before closing the session.
 */
import { z } from "zod";


/**
 * Protocol versions this build speaks, best first. Version 2 is version 1 plus the inference gateway
 * streams (`gw_*`); those messages are a protocol violation in a session that negotiated version 1, so
 * an old agent and a new host (or the reverse) still agree on everything they send each other.
 * Version 3 adds the warm pool: the tenant-less `prepare` request, the `prepared` event, the
 * `preparing`/`prepared` phases and `state.prepared` in the agent's hello.
 */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = [3, 2, 1];
/** The first protocol version that carries inference gateway streams. */
export const GATEWAY_PROTOCOL_VERSION = 2;
/** The first protocol version with `prepare`/`prepared` (warm pool). */
export const PREPARE_PROTOCOL_VERSION = 3;

/** Largest body chunk in one gateway frame; well under the 1 MiB frame limit, with room for the envelope. */
export const MAX_GATEWAY_CHUNK = 256 * 1024;
/** Headers per gateway request or response (only a small allow-listed subset is ever forwarded). */
export const MAX_GATEWAY_HEADERS = 16;
export const GATEWAY_METHODS = ["GET", "POST"] as const;
export type GatewayMethod = (typeof GATEWAY_METHODS)[number];

export const FAILURE_CODES = [
  "ssh_key_rejected",
  "openclaw_digest_mismatch",
  "openclaw_start_failed",
  "sshd_unavailable",
  "setup_failed",
] as const;
export type FailureCode = (typeof FAILURE_CODES)[number];

/** Codes of `error` replies to requests. */
export const ERROR_CODES = [
  "unsupported_version",
  "not_ready_for_request",
  "setup_conflict",
  "invalid_request",
  "internal_error",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const AGENT_PHASES = ["awaiting_setup", "preparing", "prepared", "setting_up", "ready", "failed"] as const;
export type AgentPhase = (typeof AGENT_PHASES)[number];

export const OPENCLAW_HEALTH = ["healthy", "unhealthy", "stopped"] as const;
export type OpenClawHealth = (typeof OPENCLAW_HEALTH)[number];

// ---------------------------------------------------------------------------------------------------
// Building blocks. Each carries the reason a receiver logs, worded for the operator reading that log.

export class ValidationError extends Error {
  override name = "ValidationError";
}

const MAX_STRING = 4096;
const MAX_KEY_LINE = 8192;
export const MAX_REQUEST_ID = 0xffff_ffff;
const MAX_EVENT_LOG_ENTRIES = 256;
const MAX_QUOTE_BYTES = 64 * 1024;

const TOKEN = /^[A-Za-z0-9._:@\/+-]+$/;
const PRINTABLE = /^[\x20-\x7e]*$/;
const HEX_SHA256 = /^[0-9a-f]{64}$/;
const HEX_SHA384 = /^[0-9a-f]{96}$/;
/** ISO 8601 UTC as produced by Date.toISOString(). */
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;
const HEADER_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;
/** Path plus query: visible ASCII only (clients percent-encode everything else). */
const HTTP_PATH = /^\/[\x21-\x7e]*$/;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Uint8Array) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** A map with exactly these keys; anything else is reported as an unknown key. */
function map<S extends z.ZodRawShape>(shape: S) {
  return z.strictObject(shape, {
    error: (iss) => (iss.code === "unrecognized_keys" ? `unknown key ${JSON.stringify(String(iss.keys[0]).slice(0, 64))}` : "must be a map"),
  });
}

/**
 * zod takes any object for a map and finds no keys in a decoded Date, Set or typed array, so a map
 * that may be empty is refused unless it is a plain object before zod looks inside.
 */
const plainMap = () => z.unknown().check(z.refine(isPlainObject, { error: "must be a map", abort: true }));

function str(opts: { min?: number; max?: number; pattern?: RegExp } = {}) {
  const max = opts.max ?? MAX_STRING;
  // Length first and aborting, so an over-long string is never run through the pattern.
  let s = z.string({ error: "must be a string" }).max(max, { error: `is longer than ${max}`, abort: true });
  if (opts.min) s = s.min(opts.min, { error: "is too short", abort: true });
  return opts.pattern ? s.regex(opts.pattern, "has an invalid format") : s;
}

function uint(max = Number.MAX_SAFE_INTEGER) {
  return z.int({ error: "must be a non-negative integer" }).min(0, "must be a non-negative integer").max(max, `must be at most ${max}`);
}

function finite() {
  return z.number({ error: "must be a finite number" }).min(0, "must be at least 0");
}

const bool = () => z.boolean({ error: "must be a boolean" });

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: `must be one of ${values.join(", ")}` });
}

/** A CBOR byte string, handed on as a Buffer that views the decoded bytes. */
function bytes(min: number, max: number) {
  return z
    .instanceof(Uint8Array, { error: "must be a byte string" })
    .refine((v) => v.length >= min && v.length <= max, `must be ${min}..${max} bytes`)
    .transform((v): Buffer => (Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.length)));
}

function array<T extends z.ZodType>(item: T, max: number) {
  // zod checks the length before the items, so a huge array costs one issue, not one per item.
  return z.array(item, { error: "must be an array" }).max(max, `has more than ${max} items`);
}

const requestId = () => uint(MAX_REQUEST_ID);
const streamId = () => uint(MAX_REQUEST_ID).min(1, "must be at least 1");

// ---------------------------------------------------------------------------------------------------
// Bodies

const HostHello = map({
  versions: array(uint(0xffff), 16).min(1, "must not be empty"),
  host_version: str({ max: 128, pattern: PRINTABLE }),
});
export type HostHello = z.infer<typeof HostHello>;

const Ready = map({
  ssh_host_keys: array(str({ min: 1, max: MAX_KEY_LINE, pattern: PRINTABLE }), 16),
  openclaw_version: str({ max: 64, pattern: PRINTABLE }),
  node_version: str({ max: 64, pattern: PRINTABLE }),
});
export type Ready = z.infer<typeof Ready>;

const Failed = map({ code: oneOf(FAILURE_CODES), message: str() });
export type Failed = z.infer<typeof Failed>;

/** A pool guest's tenant-less preparation is done: OpenClaw runs with a neutral configuration. */
const Prepared = map({
  openclaw_version: str({ max: 64, pattern: PRINTABLE }),
  node_version: str({ max: 64, pattern: PRINTABLE }),
  /** How long the preparation took in the agent, milliseconds. */
  prepare_ms: uint(),
});
export type Prepared = z.infer<typeof Prepared>;

/** `prepare` takes no parameters: nothing about a tenant is known before the claim. */
const PrepareParams = plainMap().pipe(map({}));
export type PrepareParams = z.infer<typeof PrepareParams>;

/** What a (re)connecting host needs to know to pick up where the agent is. */
const AgentStateSummary = map({
  phase: oneOf(AGENT_PHASES),
  /** SHA-256 (hex) of the accepted setup parameters, so a host can tell whether its setup is the one applied. */
  setup_digest: str({ pattern: HEX_SHA256 }).nullable(),
  /** Last progress stage reported. */
  stage: str({ max: 64, pattern: TOKEN }).nullable(),
  ready: Ready.nullable(),
  failed: Failed.nullable(),
  /**
   * Set once a `prepare` completed in this boot (stays set after the claim). Version ≥ 3 only: an
   * agent leaves the key out of its hello in older sessions, and a missing key decodes as null.
   */
  prepared: Prepared.nullable().default(null),
});
export type AgentStateSummary = z.infer<typeof AgentStateSummary>;

const AgentHello = map({
  version: uint(0xffff),
  agent_version: str({ max: 128, pattern: PRINTABLE }),
  boot_id: str({ min: 1, max: 64, pattern: TOKEN }),
  image_id: str({ min: 1, max: 128, pattern: TOKEN }).nullable(),
  state: AgentStateSummary,
});
export type AgentHello = z.infer<typeof AgentHello>;

/** An http(s) URL without credentials; the agent hands it to OpenClaw as the inference endpoint. */
const gatewayAddress = str({ min: 1, max: 512, pattern: PRINTABLE }).superRefine((s, ctx) => {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    ctx.addIssue("must be an absolute URL");
    return;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") ctx.addIssue("must be an http(s) URL");
  else if (url.username || url.password) ctx.addIssue("must not carry credentials");
});

/** Shape checks only; the agent parses the key itself so a bad key becomes `ssh_key_rejected`. */
const SetupParams = map({
  public_key: str({ min: 1, max: MAX_KEY_LINE }),
  agent: oneOf(["openclaw"]),
  inference_model: str({ min: 1, max: 200, pattern: TOKEN }),
  gateway_address: gatewayAddress,
  instance_name: str({ min: 1, max: 63, pattern: /^[a-z0-9][a-z0-9-]*$/ }),
});
export type SetupParams = z.infer<typeof SetupParams>;

const SetupAck = map({
  /** True when an identical setup had already been accepted in this boot. */
  already_applied: bool(),
});
export type SetupAck = z.infer<typeof SetupAck>;

const ErrorReply = map({ code: oneOf(ERROR_CODES), message: str() });
export type ErrorReply = z.infer<typeof ErrorReply>;

const QuoteRequest = map({ nonce: bytes(16, 64) });
export type QuoteRequest = z.infer<typeof QuoteRequest>;

/** One RTMR3 event as the agent logs it (the host's attestation API serves these too). */
export const Rtmr3Event = map({
  imr: z.literal(3, { error: "must be 3" }),
  /** SHA-384 of utf8(event_type + ":" + event), hex. */
  digest: str({ pattern: HEX_SHA384 }),
  event_type: str({ min: 1, max: 64, pattern: TOKEN }),
  event: str({ max: MAX_STRING, pattern: PRINTABLE }),
});
export type Rtmr3Event = z.infer<typeof Rtmr3Event>;

const eventLog = () => array(Rtmr3Event, MAX_EVENT_LOG_ENTRIES);
const QuoteReply = z.discriminatedUnion(
  "available",
  [
    map({ available: z.literal(true), quote: bytes(48, MAX_QUOTE_BYTES), report_data: bytes(64, 64), event_log: eventLog() }),
    map({ available: z.literal(false), reason: str({ min: 1 }), event_log: eventLog() }),
  ],
  { error: (iss) => (iss.code === "invalid_union" ? "must be a boolean" : "must be a map") },
);
export type QuoteReply = z.infer<typeof QuoteReply>;

const Progress = map({ stage: str({ min: 1, max: 64, pattern: TOKEN }), message: str() });
export type Progress = z.infer<typeof Progress>;

const Heartbeat = map({
  uptime_s: finite(),
  load: z.tuple([finite(), finite(), finite()], {
    error: (iss) => (iss.code === "too_big" ? "has more than 3 items" : iss.code === "too_small" ? "must have 3 items" : "must be an array"),
  }),
  mem_total_bytes: uint(),
  mem_available_bytes: uint(),
  openclaw: oneOf(OPENCLAW_HEALTH),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

const EgressSample = map({
  bytes: uint(),
  packets: uint(),
  /** ISO 8601 UTC with milliseconds. */
  sampled_at: str({ max: 32, pattern: ISO_UTC }),
});
export type EgressSample = z.infer<typeof EgressSample>;

const Bye = map({ reason: str({ max: 512, pattern: PRINTABLE }) });
export type Bye = z.infer<typeof Bye>;

/**
 * Lower-case header name → value. The count and the names are checked on the map as received, before
 * zod builds its copy: zod's record would silently drop a `__proto__` key instead of refusing it.
 */
const GatewayHeaders = z
  .unknown()
  .check(
    z.superRefine((v, ctx) => {
      if (!isPlainObject(v)) return void ctx.addIssue({ code: "custom", message: "must be a map", abort: true });
      const keys = Object.keys(v);
      if (keys.length > MAX_GATEWAY_HEADERS) return void ctx.addIssue({ code: "custom", message: `has more than ${MAX_GATEWAY_HEADERS} entries`, abort: true });
      const bad = keys.find((k) => !HEADER_NAME.test(k));
      if (bad !== undefined) ctx.addIssue({ code: "custom", message: `header name ${JSON.stringify(bad.slice(0, 64))} is not a lower-case token`, abort: true });
    }),
  )
  .pipe(z.record(z.string(), str({ max: 1024, pattern: PRINTABLE })));
export type GatewayHeaders = z.infer<typeof GatewayHeaders>;

/**
 * Inference gateway streams (protocol ≥ 2). The agent opens a stream per HTTP request its loopback
 * gateway receives; `stream` ids are chosen by the agent, unique within a session. The host answers
 * with one `gw_response` (status, headers, first body bytes) and zero or more `gw_response_body`
 * frames; the frame with `end: true` completes the stream. Which instance a stream belongs to is
 * never in a message: it is the channel the host dialled.
 */
const GatewayRequestOpen = map({
  stream: streamId(),
  method: oneOf(GATEWAY_METHODS),
  /** Path and query as the guest client sent them, e.g. `/v1/chat/completions`. */
  path: str({ min: 1, max: 2048, pattern: HTTP_PATH }),
  headers: GatewayHeaders,
  /** The request body, or its first part when `end` is false. */
  body: bytes(0, MAX_GATEWAY_CHUNK),
  end: bool(),
});
export type GatewayRequestOpen = z.infer<typeof GatewayRequestOpen>;

const GatewayBodyChunk = map({ stream: streamId(), data: bytes(0, MAX_GATEWAY_CHUNK), end: bool() });
export type GatewayBodyChunk = z.infer<typeof GatewayBodyChunk>;

/** The guest client went away: the host stops working on the stream. */
const GatewayCancel = map({ stream: streamId() });
export type GatewayCancel = z.infer<typeof GatewayCancel>;

const GatewayResponseHead = map({
  stream: streamId(),
  status: uint(599).min(100, "must be an HTTP status (100..599)"),
  headers: GatewayHeaders,
  body: bytes(0, MAX_GATEWAY_CHUNK),
  end: bool(),
});
export type GatewayResponseHead = z.infer<typeof GatewayResponseHead>;

/** The host abandoned a stream mid-way: the agent cuts the client's connection instead of ending it cleanly. */
const GatewayReset = map({ stream: streamId(), reason: str({ max: 512, pattern: PRINTABLE }) });
export type GatewayReset = z.infer<typeof GatewayReset>;

// ---------------------------------------------------------------------------------------------------
// Envelopes

const request = <T extends string, B extends z.ZodType>(type: T, body: B) => map({ type: z.literal(type), id: requestId(), body });
const reply = <T extends string, B extends z.ZodType>(type: T, body: B) => map({ type: z.literal(type), re: requestId(), body });
const event = <T extends string, B extends z.ZodType>(type: T, body: B) => map({ type: z.literal(type), body });

/** The reason for a message whose `type` is not in the set, quoting (a bounded piece of) what came. */
const unknownType = (direction: string) => (iss: z.core.$ZodRawIssue) =>
  iss.code === "invalid_union"
    ? `unknown ${direction} message type ${JSON.stringify(String((iss.input as { type?: unknown } | undefined)?.type).slice(0, 32))}`
    : "must be a map";

const HostMessage = z.discriminatedUnion(
  "type",
  [
    request("hello", HostHello),
    request("setup", SetupParams),
    request("prepare", PrepareParams),
    request("quote", QuoteRequest),
    event("gw_response", GatewayResponseHead),
    event("gw_response_body", GatewayBodyChunk),
    event("gw_reset", GatewayReset),
    event("bye", Bye),
  ],
  { error: unknownType("host") },
);
export type HostMessage = z.infer<typeof HostMessage>;

const AgentMessage = z.discriminatedUnion(
  "type",
  [
    reply("hello", AgentHello),
    reply("ack", SetupAck),
    reply("quote_reply", QuoteReply),
    reply("error", ErrorReply),
    event("progress", Progress),
    event("ready", Ready),
    event("prepared", Prepared),
    event("failed", Failed),
    event("heartbeat", Heartbeat),
    event("egress", EgressSample),
    event("gw_request", GatewayRequestOpen),
    event("gw_request_body", GatewayBodyChunk),
    event("gw_cancel", GatewayCancel),
    event("bye", Bye),
  ],
  { error: unknownType("agent") },
);
export type AgentMessage = z.infer<typeof AgentMessage>;

export type GatewayAgentMessage = Extract<AgentMessage, { type: "gw_request" | "gw_request_body" | "gw_cancel" }>;
export type GatewayHostMessage = Extract<HostMessage, { type: "gw_response" | "gw_response_body" | "gw_reset" }>;
export type AnyMessage = HostMessage | AgentMessage;

/** Whether a message belongs to a gateway stream (only valid in a session of version ≥ GATEWAY_PROTOCOL_VERSION). */
export function isGatewayMessage(m: AnyMessage): m is GatewayAgentMessage | GatewayHostMessage {
  return m.type.startsWith("gw_");
}

/**
 * The schemas as written, for the test that holds the compiled validators to them. Nothing else
 * should parse with these: they are several times slower than the compiled ones.
 */
export const MESSAGE_SCHEMAS = { host: HostMessage, agent: AgentMessage } as const;

/*
 * The host validates every frame of every guest within per-guest budgets, and zod's runtime parser
 * costs 2-3x the hand-written checks this replaced. z.compile generates a parser that runs the same
 * checks and hands anything it rejects to the runtime parser, so the reasons are the runtime's. Where
 * it cannot compile (or code generation is disallowed) it keeps the runtime parser by itself; a test
 * insists that these two do compile. Compiled on first use: each side only ever receives one kind, and
 * compiling costs tens of milliseconds at start-up.
 */
let compiledHost: typeof HostMessage | undefined;
let compiledAgent: typeof AgentMessage | undefined;

// ---------------------------------------------------------------------------------------------------
// Validation: the schemas above, with zod's first issue turned into the `path: reason` callers log.

/**
 * Runs a schema and throws its first issue as a ValidationError. `pathOf` names where the issue is
 * (a body's issues are named after the message type, as `hello.state.phase`). A required key that is
 * absent is reported on the map that lacks it (`setup: missing public_key`), as a reader expects.
 */
function parse<T>(schema: z.ZodType<T>, v: unknown, pathOf: (v: unknown, path: readonly PropertyKey[]) => string): T {
  const res = schema.safeParse(v);
  if (res.success) return res.data;
  const issue = firstReason(v, res.error.issues);
  const { path } = issue;
  if (path.length > 0 && isAbsent(v, path)) throw new ValidationError(`${pathOf(v, path.slice(0, -1))}: missing ${String(path.at(-1))}`);
  throw new ValidationError(`${pathOf(v, path)}: ${issue.message}`);
}

/**
 * zod lists a map's own problems after those of its fields; a reader learns more from the outermost
 * one, and from a stray or absent key before a bad value (`message: unknown key "re"` rather than
 * what that key did to the body).
 */
function firstReason(v: unknown, issues: readonly z.core.$ZodIssue[]): z.core.$ZodIssue {
  // Depth of the key at fault: an unknown key sits one level below the map zod reports it on.
  const rank = (i: z.core.$ZodIssue) =>
    i.code === "unrecognized_keys" ? (i.path.length + 1) * 3 : i.path.length * 3 + (i.path.length > 0 && isAbsent(v, i.path) ? 1 : 2);
  return issues.reduce((best, i) => (rank(i) < rank(best) ? i : best));
}

/** Whether the last key of `path` is absent from the map the rest of `path` leads to in `v`. */
function isAbsent(v: unknown, path: readonly PropertyKey[]): boolean {
  let parent = v;
  for (const k of path.slice(0, -1)) {
    if (typeof parent !== "object" || parent === null) return false;
    parent = (parent as Record<PropertyKey, unknown>)[k];
  }
  return isPlainObject(parent) && !Object.hasOwn(parent, path.at(-1)!);
}

function joinPath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const k of path) out += typeof k === "number" ? `[${k}]` : `.${String(k)}`;
  return out;
}

function messagePath(v: unknown, path: readonly PropertyKey[]): string {
  return path[0] === "body" ? joinPath(String((v as { type: unknown }).type), path.slice(1)) : joinPath("message", path);
}

/** Validates a decoded value as a message the agent may receive from the host. */
export function validateHostMessage(v: unknown): HostMessage {
  return parse((compiledHost ??= z.compile(HostMessage)), v, messagePath);
}

/** Validates a decoded value as a message the host may receive from the agent. */
export function validateAgentMessage(v: unknown): AgentMessage {
  return parse((compiledAgent ??= z.compile(AgentMessage)), v, messagePath);
}

/** Shape checks only; the agent parses the key itself so a bad key becomes `ssh_key_rejected`. */
export function validateSetupParams(v: unknown, p = "setup"): SetupParams {
  return parse(SetupParams, v, (_v, path) => joinPath(p, path));
}

/** Makes a free-form reason fit a `bye` (printable ASCII, bounded), e.g. one quoting bytes from a bad frame. */
export function byeReason(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, "?").slice(0, 512);
}
