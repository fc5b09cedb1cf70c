/**
 * The host–agent message set, in one place for both sides.
 *
 * Every message is a CBOR map `{type, id?, re?, body}`: requests (host → agent) carry `id`, replies
 * carry `re` (the request's id), events carry neither. Keys are snake_case on the wire. Validators are
 * strict: unknown types, unknown keys, wrong types and out-of-range values are all rejected with a
 * reason, which the receiving side logs before closing the session.
 */

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

export interface HostHello {
  versions: number[];
  host_version: string;
}

export interface Ready {
  ssh_host_keys: string[];
  openclaw_version: string;
  node_version: string;
}

export interface Failed {
  code: FailureCode;
  message: string;
}

/** A pool guest's tenant-less preparation is done: OpenClaw runs with a neutral configuration. */
export interface Prepared {
  openclaw_version: string;
  node_version: string;
  /** How long the preparation took in the agent, milliseconds. */
  prepare_ms: number;
}

/** `prepare` takes no parameters: nothing about a tenant is known before the claim. */
export interface PrepareParams {}

/** What a (re)connecting host needs to know to pick up where the agent is. */
export interface AgentStateSummary {
  phase: AgentPhase;
  /** SHA-256 (hex) of the accepted setup parameters, so a host can tell whether its setup is the one applied. */
  setup_digest: string | null;
  /** Last progress stage reported. */
  stage: string | null;
  ready: Ready | null;
  failed: Failed | null;
  /**
   * Set once a `prepare` completed in this boot (stays set after the claim). Version ≥ 3 only: an
   * agent leaves the key out of its hello in older sessions, and a missing key decodes as null.
   */
  prepared: Prepared | null;
}

export interface AgentHello {
  version: number;
  agent_version: string;
  boot_id: string;
  image_id: string | null;
  state: AgentStateSummary;
}

export interface SetupParams {
  public_key: string;
  agent: string;
  inference_model: string;
  gateway_address: string;
  instance_name: string;
}

export interface SetupAck {
  /** True when an identical setup had already been accepted in this boot. */
  already_applied: boolean;
}

export interface ErrorReply {
  code: ErrorCode;
  message: string;
}

export interface QuoteRequest {
  nonce: Buffer;
}

export interface Rtmr3Event {
  imr: 3;
  /** SHA-384 of utf8(event_type + ":" + event), hex. */
  digest: string;
  event_type: string;
  event: string;
}

export type QuoteReply =
  | { available: true; quote: Buffer; report_data: Buffer; event_log: Rtmr3Event[] }
  | { available: false; reason: string; event_log: Rtmr3Event[] };

export interface Progress {
  stage: string;
  message: string;
}

export interface Heartbeat {
  uptime_s: number;
  load: [number, number, number];
  mem_total_bytes: number;
  mem_available_bytes: number;
  openclaw: OpenClawHealth;
}

export interface EgressSample {
  bytes: number;
  packets: number;
  /** ISO 8601 UTC with milliseconds. */
  sampled_at: string;
}

export interface Bye {
  reason: string;
}

/** Lower-case header name → value. */
export type GatewayHeaders = Record<string, string>;

/**
 * Inference gateway streams (protocol ≥ 2). The agent opens a stream per HTTP request its loopback
 * gateway receives; `stream` ids are chosen by the agent, unique within a session. The host answers
 * with one `gw_response` (status, headers, first body bytes) and zero or more `gw_response_body`
 * frames; the frame with `end: true` completes the stream. Which instance a stream belongs to is
 * never in a message: it is the channel the host dialled.
 */
export interface GatewayRequestOpen {
  stream: number;
  method: GatewayMethod;
  /** Path and query as the guest client sent them, e.g. `/v1/chat/completions`. */
  path: string;
  headers: GatewayHeaders;
  /** The request body, or its first part when `end` is false. */
  body: Buffer;
  end: boolean;
}

export interface GatewayBodyChunk {
  stream: number;
  data: Buffer;
  end: boolean;
}

/** The guest client went away: the host stops working on the stream. */
export interface GatewayCancel {
  stream: number;
}

export interface GatewayResponseHead {
  stream: number;
  status: number;
  headers: GatewayHeaders;
  body: Buffer;
  end: boolean;
}

/** The host abandoned a stream mid-way: the agent cuts the client's connection instead of ending it cleanly. */
export interface GatewayReset {
  stream: number;
  reason: string;
}

export type HostMessage =
  | { type: "hello"; id: number; body: HostHello }
  | { type: "setup"; id: number; body: SetupParams }
  | { type: "prepare"; id: number; body: PrepareParams }
  | { type: "quote"; id: number; body: QuoteRequest }
  | { type: "gw_response"; body: GatewayResponseHead }
  | { type: "gw_response_body"; body: GatewayBodyChunk }
  | { type: "gw_reset"; body: GatewayReset }
  | { type: "bye"; body: Bye };

export type AgentMessage =
  | { type: "hello"; re: number; body: AgentHello }
  | { type: "ack"; re: number; body: SetupAck }
  | { type: "quote_reply"; re: number; body: QuoteReply }
  | { type: "error"; re: number; body: ErrorReply }
  | { type: "progress"; body: Progress }
  | { type: "ready"; body: Ready }
  | { type: "prepared"; body: Prepared }
  | { type: "failed"; body: Failed }
  | { type: "heartbeat"; body: Heartbeat }
  | { type: "egress"; body: EgressSample }
  | { type: "gw_request"; body: GatewayRequestOpen }
  | { type: "gw_request_body"; body: GatewayBodyChunk }
  | { type: "gw_cancel"; body: GatewayCancel }
  | { type: "bye"; body: Bye };

export type GatewayAgentMessage = Extract<AgentMessage, { type: "gw_request" | "gw_request_body" | "gw_cancel" }>;
export type GatewayHostMessage = Extract<HostMessage, { type: "gw_response" | "gw_response_body" | "gw_reset" }>;

/** Whether a message belongs to a gateway stream (only valid in a session of version ≥ GATEWAY_PROTOCOL_VERSION). */
export function isGatewayMessage(m: AnyMessage): m is GatewayAgentMessage | GatewayHostMessage {
  return m.type.startsWith("gw_");
}

export type AnyMessage = HostMessage | AgentMessage;

// ---------------------------------------------------------------------------------------------------
// Validation

export class ValidationError extends Error {
  override name = "ValidationError";
}

type Obj = Record<string, unknown>;

const MAX_STRING = 4096;
const MAX_KEY_LINE = 8192;
export const MAX_REQUEST_ID = 0xffff_ffff;
const MAX_EVENT_LOG_ENTRIES = 256;
const MAX_QUOTE_BYTES = 64 * 1024;

function fail(path: string, what: string): never {
  throw new ValidationError(`${path}: ${what}`);
}

function isPlainObject(v: unknown): v is Obj {
  if (typeof v !== "object" || v === null || Array.isArray(v) || Buffer.isBuffer(v) || v instanceof Uint8Array) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function object(v: unknown, path: string, required: readonly string[], optional: readonly string[] = []): Obj {
  if (!isPlainObject(v)) fail(path, "must be a map");
  for (const k of Object.keys(v)) {
    if (!required.includes(k) && !optional.includes(k)) fail(path, `unknown key ${JSON.stringify(k.slice(0, 64))}`);
  }
  for (const k of required) if (!Object.hasOwn(v, k)) fail(path, `missing ${k}`);
  return v;
}

function str(v: unknown, path: string, opts: { min?: number; max?: number; pattern?: RegExp } = {}): string {
  if (typeof v !== "string") fail(path, "must be a string");
  const max = opts.max ?? MAX_STRING;
  if (v.length < (opts.min ?? 0)) fail(path, "is too short");
  if (v.length > max) fail(path, `is longer than ${max}`);
  if (opts.pattern && !opts.pattern.test(v)) fail(path, "has an invalid format");
  return v;
}

function nullableStr(v: unknown, path: string, opts: { min?: number; max?: number; pattern?: RegExp } = {}): string | null {
  return v === null ? null : str(v, path, opts);
}

function uint(v: unknown, path: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) fail(path, "must be a non-negative integer");
  if (v > max) fail(path, `must be at most ${max}`);
  return v;
}

function finite(v: unknown, path: string, min = 0): number {
  if (typeof v !== "number" || !Number.isFinite(v)) fail(path, "must be a finite number");
  if (v < min) fail(path, `must be at least ${min}`);
  return v;
}

function bool(v: unknown, path: string): boolean {
  if (typeof v !== "boolean") fail(path, "must be a boolean");
  return v;
}

function bytes(v: unknown, path: string, min: number, max: number): Buffer {
  if (!(v instanceof Uint8Array)) fail(path, "must be a byte string");
  if (v.length < min || v.length > max) fail(path, `must be ${min}..${max} bytes`);
  return Buffer.from(v.buffer, v.byteOffset, v.length);
}

function oneOf<T extends string>(v: unknown, path: string, allowed: readonly T[]): T {
  if (typeof v !== "string" || !(allowed as readonly string[]).includes(v)) fail(path, `must be one of ${allowed.join(", ")}`);
  return v as T;
}

function array(v: unknown, path: string, max: number): unknown[] {
  if (!Array.isArray(v)) fail(path, "must be an array");
  if (v.length > max) fail(path, `has more than ${max} items`);
  return v;
}

const TOKEN = /^[A-Za-z0-9._:@\/+-]+$/;
const PRINTABLE = /^[\x20-\x7e]*$/;
const HEX_SHA256 = /^[0-9a-f]{64}$/;
const HEX_SHA384 = /^[0-9a-f]{96}$/;
/** ISO 8601 UTC as produced by Date.toISOString(). */
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z$/;

function validateHostHello(v: unknown, p: string): HostHello {
  const o = object(v, p, ["versions", "host_version"]);
  const versions = array(o.versions, `${p}.versions`, 16).map((x, i) => uint(x, `${p}.versions[${i}]`, 0xffff));
  if (versions.length === 0) fail(`${p}.versions`, "must not be empty");
  return { versions, host_version: str(o.host_version, `${p}.host_version`, { max: 128, pattern: PRINTABLE }) };
}

function validateReady(v: unknown, p: string): Ready {
  const o = object(v, p, ["ssh_host_keys", "openclaw_version", "node_version"]);
  const keys = array(o.ssh_host_keys, `${p}.ssh_host_keys`, 16).map((k, i) =>
    str(k, `${p}.ssh_host_keys[${i}]`, { min: 1, max: MAX_KEY_LINE, pattern: PRINTABLE }),
  );
  return {
    ssh_host_keys: keys,
    openclaw_version: str(o.openclaw_version, `${p}.openclaw_version`, { max: 64, pattern: PRINTABLE }),
    node_version: str(o.node_version, `${p}.node_version`, { max: 64, pattern: PRINTABLE }),
  };
}

function validateFailed(v: unknown, p: string): Failed {
  const o = object(v, p, ["code", "message"]);
  return { code: oneOf(o.code, `${p}.code`, FAILURE_CODES), message: str(o.message, `${p}.message`) };
}

function validatePrepared(v: unknown, p: string): Prepared {
  const o = object(v, p, ["openclaw_version", "node_version", "prepare_ms"]);
  return {
    openclaw_version: str(o.openclaw_version, `${p}.openclaw_version`, { max: 64, pattern: PRINTABLE }),
    node_version: str(o.node_version, `${p}.node_version`, { max: 64, pattern: PRINTABLE }),
    prepare_ms: uint(o.prepare_ms, `${p}.prepare_ms`),
  };
}

function validateState(v: unknown, p: string): AgentStateSummary {
  // `prepared` is optional on the wire: agents leave it out of version 1 and 2 sessions.
  const o = object(v, p, ["phase", "setup_digest", "stage", "ready", "failed"], ["prepared"]);
  return {
    phase: oneOf(o.phase, `${p}.phase`, AGENT_PHASES),
    setup_digest: nullableStr(o.setup_digest, `${p}.setup_digest`, { pattern: HEX_SHA256 }),
    stage: nullableStr(o.stage, `${p}.stage`, { max: 64, pattern: TOKEN }),
    ready: o.ready === null ? null : validateReady(o.ready, `${p}.ready`),
    failed: o.failed === null ? null : validateFailed(o.failed, `${p}.failed`),
    prepared: o.prepared === undefined || o.prepared === null ? null : validatePrepared(o.prepared, `${p}.prepared`),
  };
}

function validateAgentHello(v: unknown, p: string): AgentHello {
  const o = object(v, p, ["version", "agent_version", "boot_id", "image_id", "state"]);
  return {
    version: uint(o.version, `${p}.version`, 0xffff),
    agent_version: str(o.agent_version, `${p}.agent_version`, { max: 128, pattern: PRINTABLE }),
    boot_id: str(o.boot_id, `${p}.boot_id`, { min: 1, max: 64, pattern: TOKEN }),
    image_id: nullableStr(o.image_id, `${p}.image_id`, { min: 1, max: 128, pattern: TOKEN }),
    state: validateState(o.state, `${p}.state`),
  };
}

/** Shape checks only; the agent parses the key itself so a bad key becomes `ssh_key_rejected`. */
export function validateSetupParams(v: unknown, p = "setup"): SetupParams {
  const o = object(v, p, ["public_key", "agent", "inference_model", "gateway_address", "instance_name"]);
  const gateway = str(o.gateway_address, `${p}.gateway_address`, { min: 1, max: 512, pattern: PRINTABLE });
  let url: URL;
  try {
    url = new URL(gateway);
  } catch {
    fail(`${p}.gateway_address`, "must be an absolute URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") fail(`${p}.gateway_address`, "must be an http(s) URL");
  if (url.username || url.password) fail(`${p}.gateway_address`, "must not carry credentials");
  return {
    public_key: str(o.public_key, `${p}.public_key`, { min: 1, max: MAX_KEY_LINE }),
    agent: oneOf(o.agent, `${p}.agent`, ["openclaw"]),
    inference_model: str(o.inference_model, `${p}.inference_model`, { min: 1, max: 200, pattern: TOKEN }),
    gateway_address: gateway,
    instance_name: str(o.instance_name, `${p}.instance_name`, { min: 1, max: 63, pattern: /^[a-z0-9][a-z0-9-]*$/ }),
  };
}

function validateRtmr3Event(v: unknown, p: string): Rtmr3Event {
  const o = object(v, p, ["imr", "digest", "event_type", "event"]);
  if (o.imr !== 3) fail(`${p}.imr`, "must be 3");
  return {
    imr: 3,
    digest: str(o.digest, `${p}.digest`, { pattern: HEX_SHA384 }),
    event_type: str(o.event_type, `${p}.event_type`, { min: 1, max: 64, pattern: TOKEN }),
    event: str(o.event, `${p}.event`, { max: MAX_STRING, pattern: PRINTABLE }),
  };
}

function validateQuoteReply(v: unknown, p: string): QuoteReply {
  if (!isPlainObject(v)) fail(p, "must be a map");
  const eventLog = (x: unknown) => array(x, `${p}.event_log`, MAX_EVENT_LOG_ENTRIES).map((e, i) => validateRtmr3Event(e, `${p}.event_log[${i}]`));
  if (v.available === true) {
    const o = object(v, p, ["available", "quote", "report_data", "event_log"]);
    return {
      available: true,
      quote: bytes(o.quote, `${p}.quote`, 48, MAX_QUOTE_BYTES),
      report_data: bytes(o.report_data, `${p}.report_data`, 64, 64),
      event_log: eventLog(o.event_log),
    };
  }
  const o = object(v, p, ["available", "reason", "event_log"]);
  if (bool(o.available, `${p}.available`) !== false) fail(`${p}.available`, "must be a boolean");
  return { available: false, reason: str(o.reason, `${p}.reason`, { min: 1 }), event_log: eventLog(o.event_log) };
}

function validateHeartbeat(v: unknown, p: string): Heartbeat {
  const o = object(v, p, ["uptime_s", "load", "mem_total_bytes", "mem_available_bytes", "openclaw"]);
  const load = array(o.load, `${p}.load`, 3).map((x, i) => finite(x, `${p}.load[${i}]`));
  if (load.length !== 3) fail(`${p}.load`, "must have 3 items");
  return {
    uptime_s: finite(o.uptime_s, `${p}.uptime_s`),
    load: [load[0]!, load[1]!, load[2]!],
    mem_total_bytes: uint(o.mem_total_bytes, `${p}.mem_total_bytes`),
    mem_available_bytes: uint(o.mem_available_bytes, `${p}.mem_available_bytes`),
    openclaw: oneOf(o.openclaw, `${p}.openclaw`, OPENCLAW_HEALTH),
  };
}

function validateEgress(v: unknown, p: string): EgressSample {
  const o = object(v, p, ["bytes", "packets", "sampled_at"]);
  return {
    bytes: uint(o.bytes, `${p}.bytes`),
    packets: uint(o.packets, `${p}.packets`),
    sampled_at: str(o.sampled_at, `${p}.sampled_at`, { max: 32, pattern: ISO_UTC }),
  };
}

function validateBye(v: unknown, p: string): Bye {
  const o = object(v, p, ["reason"]);
  return { reason: str(o.reason, `${p}.reason`, { max: 512, pattern: PRINTABLE }) };
}

const HEADER_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;
/** Path plus query: visible ASCII only (clients percent-encode everything else). */
const HTTP_PATH = /^\/[\x21-\x7e]*$/;

function streamId(v: unknown, p: string): number {
  const n = uint(v, p, MAX_REQUEST_ID);
  if (n === 0) fail(p, "must be at least 1");
  return n;
}

function gatewayHeaders(v: unknown, p: string): GatewayHeaders {
  if (!isPlainObject(v)) fail(p, "must be a map");
  const keys = Object.keys(v);
  if (keys.length > MAX_GATEWAY_HEADERS) fail(p, `has more than ${MAX_GATEWAY_HEADERS} entries`);
  const out: GatewayHeaders = {};
  for (const k of keys) {
    if (!HEADER_NAME.test(k)) fail(p, `header name ${JSON.stringify(k.slice(0, 64))} is not a lower-case token`);
    out[k] = str(v[k], `${p}.${k}`, { max: 1024, pattern: PRINTABLE });
  }
  return out;
}

function validateGatewayRequest(v: unknown, p: string): GatewayRequestOpen {
  const o = object(v, p, ["stream", "method", "path", "headers", "body", "end"]);
  return {
    stream: streamId(o.stream, `${p}.stream`),
    method: oneOf(o.method, `${p}.method`, GATEWAY_METHODS),
    path: str(o.path, `${p}.path`, { min: 1, max: 2048, pattern: HTTP_PATH }),
    headers: gatewayHeaders(o.headers, `${p}.headers`),
    body: bytes(o.body, `${p}.body`, 0, MAX_GATEWAY_CHUNK),
    end: bool(o.end, `${p}.end`),
  };
}

function validateGatewayChunk(v: unknown, p: string): GatewayBodyChunk {
  const o = object(v, p, ["stream", "data", "end"]);
  return { stream: streamId(o.stream, `${p}.stream`), data: bytes(o.data, `${p}.data`, 0, MAX_GATEWAY_CHUNK), end: bool(o.end, `${p}.end`) };
}

function validateGatewayResponse(v: unknown, p: string): GatewayResponseHead {
  const o = object(v, p, ["stream", "status", "headers", "body", "end"]);
  const status = uint(o.status, `${p}.status`, 599);
  if (status < 100) fail(`${p}.status`, "must be an HTTP status (100..599)");
  return {
    stream: streamId(o.stream, `${p}.stream`),
    status,
    headers: gatewayHeaders(o.headers, `${p}.headers`),
    body: bytes(o.body, `${p}.body`, 0, MAX_GATEWAY_CHUNK),
    end: bool(o.end, `${p}.end`),
  };
}

function envelope(v: unknown, kind: "request" | "reply" | "event"): Obj {
  const keys = kind === "request" ? ["type", "id", "body"] : kind === "reply" ? ["type", "re", "body"] : ["type", "body"];
  const o = object(v, "message", keys);
  if (kind === "request") uint(o.id, "message.id", MAX_REQUEST_ID);
  if (kind === "reply") uint(o.re, "message.re", MAX_REQUEST_ID);
  return o;
}

/** Validates a decoded value as a message the agent may receive from the host. */
export function validateHostMessage(v: unknown): HostMessage {
  if (!isPlainObject(v)) fail("message", "must be a map");
  const type = v.type;
  switch (type) {
    case "hello": {
      const o = envelope(v, "request");
      return { type, id: o.id as number, body: validateHostHello(o.body, "hello") };
    }
    case "setup": {
      const o = envelope(v, "request");
      return { type, id: o.id as number, body: validateSetupParams(o.body, "setup") };
    }
    case "prepare": {
      const o = envelope(v, "request");
      object(o.body, "prepare", []);
      return { type, id: o.id as number, body: {} };
    }
    case "quote": {
      const o = envelope(v, "request");
      const b = object(o.body, "quote", ["nonce"]);
      return { type, id: o.id as number, body: { nonce: bytes(b.nonce, "quote.nonce", 16, 64) } };
    }
    case "gw_response":
      return { type, body: validateGatewayResponse(envelope(v, "event").body, "gw_response") };
    case "gw_response_body":
      return { type, body: validateGatewayChunk(envelope(v, "event").body, "gw_response_body") };
    case "gw_reset": {
      const b = object(envelope(v, "event").body, "gw_reset", ["stream", "reason"]);
      return { type, body: { stream: streamId(b.stream, "gw_reset.stream"), reason: str(b.reason, "gw_reset.reason", { max: 512, pattern: PRINTABLE }) } };
    }
    case "bye":
      return { type, body: validateBye(envelope(v, "event").body, "bye") };
    default:
      fail("message.type", `unknown host message type ${JSON.stringify(String(type).slice(0, 32))}`);
  }
}

/** Validates a decoded value as a message the host may receive from the agent. */
export function validateAgentMessage(v: unknown): AgentMessage {
  if (!isPlainObject(v)) fail("message", "must be a map");
  const type = v.type;
  switch (type) {
    case "hello": {
      const o = envelope(v, "reply");
      return { type, re: o.re as number, body: validateAgentHello(o.body, "hello") };
    }
    case "ack": {
      const o = envelope(v, "reply");
      const b = object(o.body, "ack", ["already_applied"]);
      return { type, re: o.re as number, body: { already_applied: bool(b.already_applied, "ack.already_applied") } };
    }
    case "quote_reply": {
      const o = envelope(v, "reply");
      return { type, re: o.re as number, body: validateQuoteReply(o.body, "quote_reply") };
    }
    case "error": {
      const o = envelope(v, "reply");
      const b = object(o.body, "error", ["code", "message"]);
      return { type, re: o.re as number, body: { code: oneOf(b.code, "error.code", ERROR_CODES), message: str(b.message, "error.message") } };
    }
    case "progress": {
      const b = object(envelope(v, "event").body, "progress", ["stage", "message"]);
      return { type, body: { stage: str(b.stage, "progress.stage", { min: 1, max: 64, pattern: TOKEN }), message: str(b.message, "progress.message") } };
    }
    case "ready":
      return { type, body: validateReady(envelope(v, "event").body, "ready") };
    case "prepared":
      return { type, body: validatePrepared(envelope(v, "event").body, "prepared") };
    case "failed":
      return { type, body: validateFailed(envelope(v, "event").body, "failed") };
    case "heartbeat":
      return { type, body: validateHeartbeat(envelope(v, "event").body, "heartbeat") };
    case "egress":
      return { type, body: validateEgress(envelope(v, "event").body, "egress") };
    case "gw_request":
      return { type, body: validateGatewayRequest(envelope(v, "event").body, "gw_request") };
    case "gw_request_body":
      return { type, body: validateGatewayChunk(envelope(v, "event").body, "gw_request_body") };
    case "gw_cancel": {
      const b = object(envelope(v, "event").body, "gw_cancel", ["stream"]);
      return { type, body: { stream: streamId(b.stream, "gw_cancel.stream") } };
    }
    case "bye":
      return { type, body: validateBye(envelope(v, "event").body, "bye") };
    default:
      fail("message.type", `unknown agent message type ${JSON.stringify(String(type).slice(0, 32))}`);
  }
}

/** Makes a free-form reason fit a `bye` (printable ASCII, bounded), e.g. one quoting bytes from a bad frame. */
export function byeReason(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, "?").slice(0, 512);
}
