import type { InferenceEndpoint } from "./metering-store.js";

/**
 * What a guest may ask an upstream for, per endpoint. Only fields whose whole cost shows up as prompt
 * or completion tokens are forwarded: a field that buys something else (a faster `service_tier`,
 * audio, web search, stored completions, provider-side tools) would be paid by the operator and never
 * billed to the tenant. Everything not listed is refused, not dropped, so a client learns at once
 * that the gateway does not do what it asked. host/gateway/README.md lists the same fields.
 */
export const FORWARDED_FIELDS: Readonly<Record<InferenceEndpoint, readonly string[]>> = Object.freeze({
  "chat.completions": Object.freeze([
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "stop",
    "seed",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "user",
    // Only as false (checked below): OpenAI-style clients such as OpenClaw's send it by default.
    "store",
  ]),
  embeddings: Object.freeze(["model", "input", "encoding_format", "dimensions", "user"]),
});

/** Message content parts priced as prompt tokens; `input_audio` and `file` are billed otherwise. */
const CONTENT_PARTS = new Set(["text", "image_url"]);
/** Tools the client runs itself; others (web_search, file_search, code_interpreter, ...) run, and are paid, upstream. */
const TOOL_TYPES = new Set(["function"]);
const STREAM_OPTIONS = new Set(["include_usage"]);

/**
 * Tokens one image input may cost (a high-detail image is about a thousand on common models); its
 * URL's bytes say nothing about it, so the reservation counts this instead.
 */
export const IMAGE_TOKEN_ALLOWANCE = 2_000;
export const MAX_CHOICES = 8;

export interface FieldRefusal {
  /** The offending field as a path, e.g. `service_tier`, `tools[2].type`. */
  param: string;
  message: string;
}

const name = (s: string) => (s.length > 64 ? `${s.slice(0, 64)}…` : s);

/** The first field of `body` this endpoint does not forward, or null. */
export function refusedField(endpoint: InferenceEndpoint, body: Record<string, unknown>): FieldRefusal | null {
  const allowed = FORWARDED_FIELDS[endpoint];
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k)) return { param: name(k), message: `field ${name(k)} is not accepted by this gateway (only fields billed as tokens are forwarded; see the gateway's field list)` };
  }
  if (endpoint !== "chat.completions") return null;
  if (body.store !== undefined && body.store !== false) return { param: "store", message: "store: only false is accepted (a stored completion is kept, and served, by the provider outside token usage)" };
  if (body.stream_options !== undefined) {
    if (typeof body.stream_options !== "object" || body.stream_options === null || Array.isArray(body.stream_options)) return { param: "stream_options", message: "stream_options must be an object" };
    for (const k of Object.keys(body.stream_options)) if (!STREAM_OPTIONS.has(k)) return { param: `stream_options.${name(k)}`, message: `stream_options.${name(k)} is not accepted by this gateway` };
  }
  if (body.tools !== undefined) {
    if (!Array.isArray(body.tools)) return { param: "tools", message: "tools must be an array" };
    for (let i = 0; i < body.tools.length; i++) {
      const t = body.tools[i] as { type?: unknown } | null;
      if (typeof t?.type !== "string" || !TOOL_TYPES.has(t.type)) return { param: `tools[${i}].type`, message: `tools[${i}].type: only function tools are accepted (tools that run upstream are paid outside token usage)` };
    }
  }
  if (body.n !== undefined && (!Number.isSafeInteger(body.n) || (body.n as number) < 1 || (body.n as number) > MAX_CHOICES)) return { param: "n", message: `n must be an integer from 1 to ${MAX_CHOICES}` };
  for (const k of ["max_tokens", "max_completion_tokens"]) {
    const v = body[k];
    if (v !== undefined && v !== null && (!Number.isSafeInteger(v) || (v as number) < 1)) return { param: k, message: `${k} must be a positive integer` };
  }
  if (Array.isArray(body.messages)) {
    for (let i = 0; i < body.messages.length; i++) {
      const content = (body.messages[i] as { content?: unknown } | null)?.content;
      if (!Array.isArray(content)) continue;
      for (let j = 0; j < content.length; j++) {
        const type = (content[j] as { type?: unknown } | null)?.type;
        if (typeof type !== "string" || !CONTENT_PARTS.has(type)) return { param: `messages[${i}].content[${j}].type`, message: `messages[${i}].content[${j}].type: only text and image_url parts are accepted` };
      }
    }
  }
  return null;
}

/**
 * The most tokens a call may be billed for, so the budget can be reserved before it runs. Input: one
 * token per byte of what the model reads (tokenisers average about four bytes per token, so this
 * over-reserves) plus an allowance per image. Output: the request's own completion limit, capped at
 * `maxOutputTokens`, times the choices asked for. The body is given the capped limit, so the upstream
 * enforces what was reserved; a request that set none gets `max_tokens` added.
 */
export function reserveTokens(endpoint: InferenceEndpoint, body: Record<string, unknown>, maxOutputTokens: number): { input: number; output: number } {
  const input = body.messages ?? body.input ?? "";
  let inputTokens = Buffer.byteLength(typeof input === "string" ? input : JSON.stringify(input), "utf8");
  if (endpoint === "embeddings") return { input: inputTokens, output: 0 };
  if (Array.isArray(body.messages)) {
    for (const m of body.messages) {
      const content = (m as { content?: unknown } | null)?.content;
      if (Array.isArray(content)) for (const p of content) if ((p as { type?: unknown } | null)?.type === "image_url") inputTokens += IMAGE_TOKEN_ALLOWANCE;
    }
  }
  const given = (["max_tokens", "max_completion_tokens"] as const).filter((k) => typeof body[k] === "number");
  const output = Math.min(maxOutputTokens, ...given.map((k) => body[k] as number));
  if (given.length === 0) body.max_tokens = output;
  for (const k of given) body[k] = output;
  return { input: inputTokens, output: output * (typeof body.n === "number" ? body.n : 1) };
}
