import { StringDecoder } from "node:string_decoder";

/** Token counts for one request, and whether the gateway had to estimate them. */
export interface TokenUsage {
  inputTokens: number;
  outputTokens: number;
  estimated: boolean;
}

/**
 * When the upstream reports no usage (an old server, a stream cut short, a client that went away),
 * the gateway counts about four bytes of text per token. It is a rough, deliberately simple rule:
 * such records are marked `estimated` so an operator can tell them from reported ones.
 */
export const BYTES_PER_ESTIMATED_TOKEN = 4;

export function estimateTokens(bytes: number): number {
  return bytes <= 0 ? 0 : Math.ceil(bytes / BYTES_PER_ESTIMATED_TOKEN);
}

/** What the request asks the model to read: its messages (chat) or input (embeddings), as JSON bytes. */
export function estimateInputTokens(body: Record<string, unknown>): number {
  const input = body.messages ?? body.input ?? body.prompt;
  if (input === undefined) return 0;
  return estimateTokens(Buffer.byteLength(typeof input === "string" ? input : JSON.stringify(input), "utf8"));
}

function count(v: unknown): number | null {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : null;
}

/** `usage` as OpenAI-compatible servers report it; null when absent or malformed. */
export function reportedUsage(u: unknown): { input: number; output: number } | null {
  if (typeof u !== "object" || u === null) return null;
  const o = u as Record<string, unknown>;
  const input = count(o.prompt_tokens);
  if (input === null) return null;
  // Embeddings report no completion tokens.
  const output = o.completion_tokens === undefined ? 0 : count(o.completion_tokens);
  return output === null ? null : { input, output };
}

/** Bytes of generated text in a message or a streamed delta: content, reasoning and tool-call arguments. */
function generatedBytes(m: unknown): number {
  if (typeof m !== "object" || m === null) return 0;
  const o = m as Record<string, unknown>;
  let n = 0;
  for (const k of ["content", "reasoning_content", "reasoning", "refusal"]) if (typeof o[k] === "string") n += Buffer.byteLength(o[k] as string, "utf8");
  if (Array.isArray(o.tool_calls)) {
    for (const t of o.tool_calls) {
      const f = (t as Record<string, unknown> | null)?.function as Record<string, unknown> | undefined;
      if (typeof f?.name === "string") n += f.name.length;
      if (typeof f?.arguments === "string") n += Buffer.byteLength(f.arguments, "utf8");
    }
  }
  return n;
}

/** Usage of a complete (non-streamed) JSON response. */
export function usageOfJsonResponse(json: unknown, estimatedInput: number): TokenUsage {
  const o = (typeof json === "object" && json !== null ? json : {}) as Record<string, unknown>;
  const r = reportedUsage(o.usage);
  if (r) return { inputTokens: r.input, outputTokens: r.output, estimated: false };
  let out = 0;
  if (Array.isArray(o.choices)) for (const c of o.choices) out += generatedBytes((c as Record<string, unknown> | null)?.message);
  return { inputTokens: estimatedInput, outputTokens: estimateTokens(out), estimated: true };
}

const MAX_LINE = 1024 * 1024;

/**
 * Watches an SSE chat-completion stream as it passes through (the bytes are forwarded unchanged) and
 * keeps what metering needs: the usage chunk that `stream_options.include_usage` makes the upstream
 * send last, and a count of generated text in case it never comes.
 */
export class SseUsageMeter {
  private readonly decoder = new StringDecoder("utf8");
  private carry = "";
  private usage: { input: number; output: number } | null = null;
  private outBytes = 0;
  /** Data events seen (excluding [DONE]). */
  events = 0;
  sawDone = false;

  push(chunk: Buffer): void {
    let text = this.carry + this.decoder.write(chunk);
    let nl: number;
    let start = 0;
    while ((nl = text.indexOf("\n", start)) >= 0) {
      this.line(text.slice(start, nl));
      start = nl + 1;
    }
    text = text.slice(start);
    // A line this long is not an SSE event any server sends; dropping it bounds memory.
    this.carry = text.length > MAX_LINE ? "" : text;
  }

  finish(estimatedInput: number): TokenUsage {
    if (this.carry) this.line(this.carry);
    this.carry = "";
    if (this.usage) return { inputTokens: this.usage.input, outputTokens: this.usage.output, estimated: false };
    return { inputTokens: estimatedInput, outputTokens: estimateTokens(this.outBytes), estimated: true };
  }

  private line(raw: string): void {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (!line.startsWith("data:")) return;
    const payload = line.slice(5).trim();
    if (payload === "[DONE]") {
      this.sawDone = true;
      return;
    }
    let ev: Record<string, unknown>;
    try {
      ev = JSON.parse(payload) as Record<string, unknown>;
    } catch {
      return;
    }
    if (typeof ev !== "object" || ev === null) return;
    this.events++;
    const u = reportedUsage(ev.usage);
    if (u) this.usage = u;
    if (Array.isArray(ev.choices)) for (const c of ev.choices) this.outBytes += generatedBytes((c as Record<string, unknown> | null)?.delta);
  }
}
