import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** A request as the double received it. */
export interface UpstreamDoubleRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: any;
}

/** Usage the double reported for one request (what a real provider would bill). */
export interface UpstreamDoubleUsage {
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
}

const words = (s: unknown): number => (typeof s === "string" ? s.split(/\s+/).filter(Boolean).length : 0);

/**
 * TEST DOUBLE of an OpenAI-compatible model server (the paid LLM upstream cannot exist here), on
 * 127.0.0.1 only. Deterministic: prompt tokens are the words of all message contents (or of the
 * embedding input); a user message "count N" is answered with N words "w1 … wN" (at most
 * max_tokens / max_completion_tokens), one SSE event per word when streaming, and that many completion tokens. Knobs make it misbehave the ways real servers do.
 */
export class OpenAiUpstreamTestDouble {
  readonly requests: UpstreamDoubleRequest[] = [];
  readonly usages: UpstreamDoubleUsage[] = [];
  /** When set, requests without `Authorization: Bearer <key>` get 401. */
  expectedKey: string | null = null;
  omitUsage = false;
  /** Answer every completion/embedding with this status and an OpenAI-style error. */
  failStatus: number | null = null;
  /** Accept requests and never answer. */
  hang = false;
  /** Streams this many events, then goes silent (connection left open). */
  stallAfterEvents: number | null = null;
  chunkDelayMs = 0;
  /** Connections the double saw closed by the client before it finished answering. */
  abandoned = 0;
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  get port(): number {
    const a = this.server?.address();
    if (typeof a !== "object" || !a) throw new Error("double not started");
    return a.port;
  }

  /** Base URL as the catalogue takes it. */
  get url(): string {
    return `http://127.0.0.1:${this.port}/v1`;
  }

  reset(): void {
    this.requests.length = 0;
    this.usages.length = 0;
    this.omitUsage = false;
    this.failStatus = null;
    this.hang = false;
    this.stallAfterEvents = null;
    this.chunkDelayMs = 0;
    this.abandoned = 0;
  }

  async start(port = 0): Promise<void> {
    const server = createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        let body: any = null;
        try {
          body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : null;
        } catch {
          body = Buffer.concat(chunks).toString("utf8");
        }
        this.requests.push({ method: req.method ?? "", path: req.url ?? "", headers: req.headers, body });
        void this.answer(req.method ?? "", req.url ?? "", req.headers, body, res);
      });
    });
    server.on("connection", (s) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    this.server = server;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }

  private json(res: ServerResponse, status: number, v: unknown): void {
    const b = JSON.stringify(v);
    res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(b) });
    res.end(b);
  }

  private async answer(method: string, path: string, headers: IncomingHttpHeaders, body: any, res: ServerResponse): Promise<void> {
    let finished = false;
    res.on("close", () => {
      if (!finished && !res.writableFinished) this.abandoned++;
    });
    const done = () => (finished = true);
    if (this.expectedKey !== null && headers.authorization !== `Bearer ${this.expectedKey}`) {
      done();
      return this.json(res, 401, { error: { message: "Incorrect API key provided: sk-***", type: "invalid_request_error", code: "invalid_api_key" } });
    }
    if (method === "GET" && path === "/v1/models") {
      done();
      return this.json(res, 200, { object: "list", data: [] });
    }
    if (this.hang) return;
    if (this.failStatus !== null) {
      done();
      return this.json(res, this.failStatus, { error: { message: `scripted failure ${this.failStatus}`, type: "server_error", code: null } });
    }
    const model = String(body?.model ?? "");
    if (method === "POST" && path === "/v1/embeddings") {
      const inputs: string[] = Array.isArray(body?.input) ? body.input : [body?.input];
      const prompt = inputs.reduce((n, s) => n + words(s), 0);
      this.usages.push({ model, prompt_tokens: prompt, completion_tokens: 0 });
      done();
      return this.json(res, 200, {
        object: "list",
        model,
        data: inputs.map((_, index) => ({ object: "embedding", index, embedding: [0.25, -0.5, 0.125] })),
        ...(this.omitUsage ? {} : { usage: { prompt_tokens: prompt, total_tokens: prompt } }),
      });
    }
    if (method !== "POST" || path !== "/v1/chat/completions") {
      done();
      return this.json(res, 404, { error: { message: "not found", type: "invalid_request_error", code: null } });
    }
    const messages: any[] = Array.isArray(body?.messages) ? body.messages : [];
    const prompt = messages.reduce((n, m) => n + words(m?.content), 0);
    const last = [...messages].reverse().find((m) => m?.role === "user");
    const asked = Number(/count (\d+)/.exec(String(last?.content ?? ""))?.[1] ?? 3);
    // Like a real server, it stops at the completion limit the request sets.
    const limit = [body?.max_completion_tokens, body?.max_tokens].find((v) => typeof v === "number") as number | undefined;
    const n = limit === undefined ? asked : Math.min(asked, limit);
    const out = Array.from({ length: n }, (_, i) => `w${i + 1}`);
    const usage = { prompt_tokens: prompt, completion_tokens: n, total_tokens: prompt + n };
    const id = `chatcmpl-double-${this.requests.length}`;
    if (body?.stream !== true) {
      if (!this.omitUsage) this.usages.push({ model, prompt_tokens: prompt, completion_tokens: n });
      done();
      return this.json(res, 200, {
        id,
        object: "chat.completion",
        created: 1_790_000_000,
        model,
        choices: [{ index: 0, message: { role: "assistant", content: out.join(" ") }, finish_reason: "stop" }],
        ...(this.omitUsage ? {} : { usage }),
      });
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const event = (v: unknown) => res.write(`data: ${JSON.stringify(v)}\n\n`);
    const chunk = (delta: unknown, finish: string | null) => ({ id, object: "chat.completion.chunk", created: 1_790_000_000, model, choices: [{ index: 0, delta, finish_reason: finish }] });
    event(chunk({ role: "assistant", content: "" }, null));
    for (let i = 0; i < out.length; i++) {
      if (this.stallAfterEvents !== null && i >= this.stallAfterEvents) return;
      if (this.chunkDelayMs) await new Promise((r) => setTimeout(r, this.chunkDelayMs));
      if (res.destroyed) return;
      event(chunk({ content: (i ? " " : "") + out[i] }, null));
    }
    event(chunk({}, "stop"));
    const includeUsage = body?.stream_options?.include_usage === true && !this.omitUsage;
    if (includeUsage) {
      this.usages.push({ model, prompt_tokens: prompt, completion_tokens: n });
      event({ id, object: "chat.completion.chunk", created: 1_790_000_000, model, choices: [], usage });
    }
    done();
    res.end("data: [DONE]\n\n");
  }
}
