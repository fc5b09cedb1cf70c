import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { GuestBufferAccount, bufferFull, type GatewayHandler, type GatewayHttpRequest, type GatewayHttpResponse } from "../link/gateway-streams.js";
import type { Database } from "../store/db.js";
import { billingWindow } from "../usage/billing.js";
import type { CatalogueModel, ModelCatalogue } from "./catalogue.js";
import { DEFAULT_GATEWAY_LIMITS, RequestRateLimiter, type GatewayLimits } from "./limits.js";
import { InferenceUsageStore, type InferenceEndpoint, type InferenceOutcome, type InferenceRecord, type InstanceAccess } from "./metering-store.js";
import { formatUsdMicroCeil, priceToMicroUsd, requestCostPicoUsd, usdToPico, type Prices } from "./money.js";
import { refusedField, reserveTokens } from "./request-policy.js";
import { HttpUpstreamClient, UpstreamError, type UpstreamClient } from "./upstream-client.js";
import { SseUsageMeter, estimateInputTokens, usageOfJsonResponse, type TokenUsage } from "./usage-meter.js";

export type { GatewayHandler } from "../link/gateway-streams.js";

export interface InferenceGatewayDeps {
  db: Database;
  catalogue: ModelCatalogue;
  clock: Clock;
  logger: Logger;
  /** Where a guest hitting its buffer cap is recorded, once per episode (default: `logger`). */
  securityLog?: Logger;
  limits?: Partial<GatewayLimits>;
  /** Where each model's `api_key_env` is looked up (process.env in production). */
  env?: NodeJS.ProcessEnv;
  upstream?: UpstreamClient;
  /** Monotonic milliseconds for the rate limiter (wall-clock jumps must not refill buckets). */
  monotonicMs?: () => number;
}

/** Instance statuses whose guest may use the gateway: OpenClaw starts during setup, before `ready`. */
const ACTIVE_STATUSES = new Set(["provisioning", "ready"]);

interface Upstream {
  model: CatalogueModel;
  /** base_url without a trailing slash, e.g. http://127.0.0.1:11434/v1 */
  base: string;
  key: string | null;
  /** api_key_env is set but the variable is not: requests get 503 rather than go out unauthenticated. */
  keyMissing: boolean;
  prices: Prices;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function errorBody(type: string, code: string, message: string, param: string | null = null): Buffer {
  return Buffer.from(JSON.stringify({ error: { message, type, param, code } }));
}

type Fail = (status: number, type: string, code: string, message: string, extra?: Record<string, string>, param?: string) => void;

type PumpResult = "end" | "timeout" | "aborted" | "error" | "too_large";

/**
 * Feeds a response body to `onChunk` until it ends, goes silent for `idleMs`, exceeds `maxBytes`,
 * fails or `signal` aborts. `onChunk` may return a promise to apply backpressure.
 */
function pump(body: IncomingMessage, onChunk: (c: Buffer) => Promise<void> | void, o: { idleMs: number; maxBytes: number; signal: AbortSignal }): Promise<PumpResult> {
  return new Promise((resolve) => {
    let done = false;
    let bytes = 0;
    let timer: NodeJS.Timeout | undefined;
    const finish = (r: PumpResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      o.signal.removeEventListener("abort", onAbort);
      if (r !== "end") body.destroy();
      resolve(r);
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => finish("timeout"), o.idleMs);
    };
    const onAbort = () => finish("aborted");
    if (o.signal.aborted) return finish("aborted");
    o.signal.addEventListener("abort", onAbort, { once: true });
    arm();
    body.on("data", (c: Buffer) => {
      if (done) return;
      arm();
      bytes += c.length;
      if (bytes > o.maxBytes) return finish("too_large");
      const p = onChunk(c);
      if (p) {
        body.pause();
        p.then(() => done || body.resume());
      }
    });
    body.on("end", () => finish("end"));
    body.on("error", () => finish("error"));
    body.on("close", () => finish(body.complete ? "end" : "error"));
  });
}

/**
 * The default inference gateway: an OpenAI-compatible API (`GET /v1/models`, `POST /v1/chat/completions`
 * with or without SSE streaming, `POST /v1/embeddings`) served to each guest over its own agent channel.
 * The instance is whatever `handlerFor` was called with for that channel; nothing in a request can
 * change it. Every request checks the instance and its tenant in the store, then the tenant's rate and
 * budget and the instance's concurrency; it goes to the upstream of the instance's model with the
 * operator's key, and what the upstream reports (or, failing that, what the gateway counted) is
 * recorded and priced exactly.
 */
export class InferenceGateway {
  readonly store: InferenceUsageStore;
  private readonly limits: GatewayLimits;
  private readonly upstreams = new Map<string, Upstream>();
  private readonly client: UpstreamClient;
  private readonly rate: RequestRateLimiter;
  private readonly inflight = new Map<string, number>();
  private readonly budgetPico: bigint | null;
  /** Spend in the current billing window per tenant, so the budget check is not a SUM per request. */
  private readonly spend = new Map<number, { start: number; end: number; pico: bigint }>();
  /**
   * Budget held by requests in flight, per tenant: each call reserves the most it can cost before it
   * runs and gives the reservation back when it is settled. In memory only: a restarted cvmd has no
   * calls in flight, and what finished is in SQLite.
   */
  private readonly reserved = new Map<number, bigint>();
  /** Each instance's buffer account, shared by all its sessions (see GuestBufferAccount). */
  private readonly buffers = new Map<string, GuestBufferAccount>();
  private readonly security: Logger;
  private readonly log: Logger;
  /** Records of finished requests not yet in SQLite (see flush()). */
  private queue: InferenceRecord[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(private readonly d: InferenceGatewayDeps) {
    this.store = new InferenceUsageStore(d.db);
    this.limits = { ...DEFAULT_GATEWAY_LIMITS, ...d.limits };
    this.client = d.upstream ?? new HttpUpstreamClient();
    this.log = d.logger;
    this.security = d.securityLog ?? d.logger;
    const monotonic = d.monotonicMs ?? (() => performance.now());
    this.rate = new RequestRateLimiter(this.limits.requestsPerMinute, monotonic);
    this.budgetPico = this.limits.budgetUsdPerPeriod === null ? null : usdToPico(this.limits.budgetUsdPerPeriod);
    const env = d.env ?? process.env;
    for (const m of d.catalogue.models) {
      const envName = m.upstream.api_key_env;
      const key = envName ? (env[envName] ?? null) : null;
      if (envName && !key) this.log.warn({ model: m.id, api_key_env: envName }, "upstream key variable is not set; the gateway refuses this model");
      this.upstreams.set(m.id, {
        model: m,
        base: m.upstream.base_url.replace(/\/+$/, ""),
        key: key || null,
        keyMissing: envName !== null && !key,
        prices: { inputMicroUsd: priceToMicroUsd(m.price_per_mtok_usd.input), outputMicroUsd: priceToMicroUsd(m.price_per_mtok_usd.output) },
      });
    }
  }

  /** The handler for one instance's channel (AgentLink.onGatewayRequest). */
  handlerFor(instanceId: string): GatewayHandler {
    let buffers = this.buffers.get(instanceId);
    if (!buffers) {
      buffers = new GuestBufferAccount(this.limits.maxBufferedBytesPerGuest, (e) =>
        this.security.warn(
          { event: "gateway_buffer_limit", instance_id: instanceId, capacity_bytes: e.capacity, held_bytes: e.held, wanted_bytes: e.wanted },
          "guest hit its gateway buffer limit; its further requests are refused until it holds less",
        ),
      );
      this.buffers.set(instanceId, buffers);
    }
    return Object.assign((req: GatewayHttpRequest, res: GatewayHttpResponse) => this.serve(instanceId, req, res), { buffers });
  }

  /** Budget reserved by a tenant's calls in flight, picodollars (tests, operators). */
  reservedPico(tenantId: number): bigint {
    return this.reserved.get(tenantId) ?? 0n;
  }

  /** Inference spend of a tenant for requests completed in [from, to), USD with cents (GET /v1/usage); includes records not yet flushed. */
  async costUsd(tenantId: number, from: Date, to: Date): Promise<string> {
    await this.flush();
    return this.store.costUsd(tenantId, from, to);
  }

  /**
   * Writes the queued records. Records are written behind the responses, batched (at most
   * `recordFlushMs` after a request ends, or at once when `recordBatch` are waiting), which takes
   * SQLite's commit off every request's path; the price is that a crash of cvmd loses at most
   * that window of records. A failed write is logged with every record's billing fields.
   */
  flush(): Promise<void> {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const batch = this.queue;
    if (batch.length === 0) return this.flushing;
    this.queue = [];
    this.flushing = this.flushing.then(() =>
      this.store.recordMany(batch).catch((err: Error) => {
        for (const r of batch) {
          this.log.error(
            { request_id: r.requestId, tenant_id: r.tenantId, instance_id: r.instanceId, model: r.model, input_tokens: r.inputTokens, output_tokens: r.outputTokens, cost_pico_usd: r.costPicoUsd.toString(), at: r.finishedAt.toISOString(), err: err.message },
            "inference record could not be stored",
          );
        }
      }),
    );
    return this.flushing;
  }

  /** Stops the upstream pool and writes what is queued. */
  async close(): Promise<void> {
    this.client.close();
    await this.flush();
  }

  // -------------------------------------------------------------------------------------------------

  private async serve(instanceId: string, req: GatewayHttpRequest, res: GatewayHttpResponse): Promise<void> {
    const requestId = `gw_${randomBytes(12).toString("hex")}`;
    const fail: Fail = (status, type, code, message, extra = {}, param) => {
      res.send(status, { "content-type": "application/json", "x-request-id": requestId, ...extra }, errorBody(type, code, message, param));
    };
    const accessRead = this.store.access(instanceId);
    // Parsed while SQLite answers (the read is a hop to its worker thread).
    const parsed = req.method === "POST" ? this.parseBody(req.body) : null;
    const access = await accessRead;
    if (!access || !ACTIVE_STATUSES.has(access.status)) {
      this.log.info({ request_id: requestId, instance_id: instanceId, status: access?.status ?? "unknown" }, "gateway request from an inactive instance refused");
      return fail(403, "permission_error", "instance_not_active", "this instance is not active; its inference gateway access has ended");
    }
    if (access.tenantSuspended) return fail(403, "permission_error", "tenant_suspended", "the account is suspended");
    if (access.inferenceMode !== "default_gateway") return fail(403, "permission_error", "gateway_not_enabled", "this instance does not use the default inference gateway");

    const path = req.path.split("?")[0]!.replace(/\/+$/, "");
    const route: InferenceEndpoint | "models" | "model" | null =
      path === "/v1/chat/completions" ? "chat.completions" : path === "/v1/embeddings" ? "embeddings" : path === "/v1/models" ? "models" : path.startsWith("/v1/models/") ? "model" : null;
    if (route === null) return fail(404, "invalid_request_error", "not_found", `unknown endpoint ${path.slice(0, 100)}`);
    if (route === "models" || route === "model") {
      if (req.method !== "GET") return fail(405, "invalid_request_error", "method_not_allowed", "use GET");
      const entry = { id: access.inferenceModel, object: "model", created: 0, owned_by: "cvm" };
      if (route === "models") return res.send(200, { "content-type": "application/json", "x-request-id": requestId }, Buffer.from(JSON.stringify({ object: "list", data: [entry] })));
      const id = decodeURIComponent(path.slice("/v1/models/".length));
      if (id !== access.inferenceModel) return fail(404, "invalid_request_error", "model_not_found", `model ${id.slice(0, 100)} is not available to this instance`);
      return res.send(200, { "content-type": "application/json", "x-request-id": requestId }, Buffer.from(JSON.stringify(entry)));
    }
    if (req.method !== "POST") return fail(405, "invalid_request_error", "method_not_allowed", "use POST");

    const retryAfter = this.rate.take(`tenant:${access.tenantId}`);
    if (retryAfter > 0) {
      this.log.info({ request_id: requestId, instance_id: instanceId, tenant_id: access.tenantId }, "gateway rate limit hit");
      return fail(429, "rate_limit_error", "rate_limit_exceeded", `rate limit of ${this.limits.requestsPerMinute} requests per minute reached`, { "retry-after": String(retryAfter) });
    }
    const running = this.inflight.get(instanceId) ?? 0;
    if (running >= this.limits.maxConcurrentPerInstance) {
      return fail(429, "rate_limit_error", "concurrency_limit_exceeded", `at most ${this.limits.maxConcurrentPerInstance} requests may run at once`, { "retry-after": "1" });
    }
    this.inflight.set(instanceId, running + 1);
    try {
      if (!parsed!.ok) return fail(parsed!.status, "invalid_request_error", parsed!.code, parsed!.message);
      await this.proxy(route, access, requestId, parsed!.body, req, res, fail);
    } finally {
      const n = (this.inflight.get(instanceId) ?? 1) - 1;
      if (n <= 0) this.inflight.delete(instanceId);
      else this.inflight.set(instanceId, n);
    }
  }

  private async proxy(
    endpoint: InferenceEndpoint,
    access: InstanceAccess,
    requestId: string,
    body: Json,
    req: GatewayHttpRequest,
    res: GatewayHttpResponse,
    fail: Fail,
  ): Promise<void> {
    const refused = refusedField(endpoint, body);
    if (refused) return fail(400, "invalid_request_error", "unsupported_parameter", refused.message, {}, refused.param);
    const model = body.model ?? access.inferenceModel;
    if (typeof model !== "string") return fail(400, "invalid_request_error", "invalid_model", "model must be a string");
    // One model per instance: the one the tenant chose (and is billed for). Others are refused, not rerouted.
    if (model !== access.inferenceModel) {
      if (this.upstreams.has(model)) return fail(403, "permission_error", "model_not_allowed", `this instance may use ${access.inferenceModel} only`);
      return fail(404, "invalid_request_error", "model_not_found", `model ${model.slice(0, 100)} does not exist`);
    }
    const up = this.upstreams.get(model);
    if (!up || up.keyMissing) return fail(503, "server_error", "upstream_not_configured", `model ${model} is not available on this host right now`);
    body.model = model;
    const wantsStream = endpoint === "chat.completions" && body.stream === true;
    // Usage in the stream is what makes streamed calls billable without guessing.
    if (wantsStream) body.stream_options = { ...(isObject(body.stream_options) ? body.stream_options : {}), include_usage: true };
    // Before the payload is built: the reservation caps the completion limit the upstream is sent.
    const most = reserveTokens(endpoint, body, this.limits.maxOutputTokens);
    let reservePico: bigint;
    try {
      reservePico = requestCostPicoUsd(most.input, most.output, up.prices);
    } catch {
      return fail(400, "invalid_request_error", "request_too_large", "this request's possible cost is beyond what the gateway meters");
    }
    const refusal = await this.reserve(access, reservePico);
    if (refusal) {
      this.log.info({ request_id: requestId, instance_id: access.instanceId, tenant_id: access.tenantId, reserve_pico_usd: reservePico.toString() }, "gateway budget exhausted");
      return fail(429, "insufficient_quota", "insufficient_quota", refusal);
    }
    try {
      await this.call(endpoint, access, requestId, body, model, up, wantsStream, req, res, fail);
    } finally {
      this.unreserve(access.tenantId, reservePico);
    }
  }

  private async call(
    endpoint: InferenceEndpoint,
    access: InstanceAccess,
    requestId: string,
    body: Json,
    model: string,
    up: Upstream,
    wantsStream: boolean,
    req: GatewayHttpRequest,
    res: GatewayHttpResponse,
    fail: Fail,
  ): Promise<void> {
    const payload = Buffer.from(JSON.stringify(body));
    // The upstream copy of the body lives as long as the call: it is the guest's memory too.
    if (!req.buffers.take(payload.length)) {
      const e = bufferFull(req.buffers);
      return res.send(e.status, { ...e.headers, "x-request-id": requestId }, e.body);
    }
    const estimatedInput = estimateInputTokens(body);

    const headers: Record<string, string> = { "content-type": "application/json", accept: wantsStream ? "text/event-stream" : "application/json" };
    if (up.key) headers.authorization = `Bearer ${up.key}`;
    const startedAt = this.d.clock.now();
    const t0 = performance.now();
    const ctl = new AbortController();
    const onCancel = () => ctl.abort("cancelled");
    req.signal.addEventListener("abort", onCancel, { once: true });
    const total = setTimeout(() => ctl.abort("timeout"), this.limits.upstreamTotalTimeoutMs);
    const base = { endpoint, access, requestId, model, stream: wantsStream, prices: up.prices, startedAt, t0 };
    let held = payload.length;
    try {
      let upRes;
      try {
        upRes = await this.client.request({
          method: "POST",
          url: new URL(`${up.base}/${endpoint === "chat.completions" ? "chat/completions" : "embeddings"}`),
          headers,
          body: payload,
          signal: ctl.signal,
          headersTimeoutMs: this.limits.upstreamHeadersTimeoutMs,
        });
      } catch (err) {
        const e = err as UpstreamError;
        if (ctl.signal.reason === "cancelled") {
          // The prompt may already be in the upstream's hands: bill the estimated input, nothing else.
          this.finish(base, 499, "cancelled", { inputTokens: estimatedInput, outputTokens: 0, estimated: true });
          return;
        }
        if (e.kind === "timeout" || ctl.signal.reason === "timeout") {
          this.log.warn({ request_id: requestId, model, upstream: up.base }, "upstream timed out before answering");
          return fail(504, "server_error", "upstream_timeout", "the model server did not answer in time");
        }
        this.log.warn({ request_id: requestId, model, upstream: up.base, error: e.message }, "upstream unreachable");
        return fail(502, "server_error", "upstream_unavailable", "the model server could not be reached");
      }

      const status = upRes.status;
      const contentType = String(upRes.headers["content-type"] ?? "");
      const pumpOpts = { idleMs: this.limits.upstreamIdleTimeoutMs, maxBytes: this.limits.maxResponseBytes, signal: ctl.signal };
      const outcomeOf = (r: PumpResult): "cancelled" | "timeout" | "failed" => (ctl.signal.reason === "cancelled" ? "cancelled" : r === "timeout" || ctl.signal.reason === "timeout" ? "timeout" : "failed");

      if (status >= 200 && status < 300 && contentType.startsWith("text/event-stream")) {
        res.head(status, { "content-type": contentType, "cache-control": "no-cache", "x-request-id": requestId });
        const meter = new SseUsageMeter();
        const r = await pump(
          upRes.body,
          (c) => {
            meter.push(c);
            if (!res.write(c)) return res.drained();
          },
          pumpOpts,
        );
        // Tokens the upstream generated are owed even when the stream did not complete.
        const usage = meter.finish(estimatedInput);
        if (r === "end") {
          res.end();
          this.finish(base, status, "ok", usage);
          return;
        }
        const why = outcomeOf(r);
        if (why !== "cancelled") {
          this.log.warn({ request_id: requestId, model, reason: r === "too_large" ? "response too large" : why }, "upstream stream cut");
          res.reset(r === "too_large" ? `upstream response exceeded ${this.limits.maxResponseBytes} bytes` : why === "timeout" ? "the model server stopped responding" : "the model server connection failed");
        }
        this.finish(base, status, why === "cancelled" ? "cancelled" : "failed", usage);
        return;
      }

      const chunks: Buffer[] = [];
      const maxBytes = status >= 200 && status < 300 ? this.limits.maxResponseBytes : 64 * 1024;
      // A collected response is the guest's memory in the host: it counts against the guest's buffer.
      const r = await pump(
        upRes.body,
        (c) => {
          if (!req.buffers.take(c.length)) return void ctl.abort("buffer_full");
          held += c.length;
          chunks.push(c);
        },
        { ...pumpOpts, maxBytes },
      );
      const text = Buffer.concat(chunks);
      chunks.length = 0;
      // From here the response is handed to res.send, which accounts for it while it is queued (the payload is done with too).
      req.buffers.release(held);
      held = 0;
      if (r !== "end") {
        const why = outcomeOf(r);
        const usage = { inputTokens: estimatedInput, outputTokens: 0, estimated: true };
        if (ctl.signal.reason === "buffer_full") {
          this.finish(base, 429, "failed", usage);
          this.log.info({ request_id: requestId, model, held: req.buffers.held }, "response refused: the guest's gateway buffer is full");
          const e = bufferFull(req.buffers);
          return res.send(e.status, { ...e.headers, "x-request-id": requestId }, e.body);
        }
        if (why === "cancelled") return this.finish(base, 499, "cancelled", usage);
        this.finish(base, why === "timeout" ? 504 : 502, "failed", usage);
        if (why === "timeout") return fail(504, "server_error", "upstream_timeout", "the model server stopped responding");
        return fail(502, "server_error", "upstream_error", r === "too_large" ? "the model server's response was too large" : "the model server connection failed");
      }
      if (status >= 200 && status < 300) {
        let json: unknown = null;
        try {
          json = JSON.parse(text.toString("utf8"));
        } catch {
          /* forwarded as is; usage is estimated */
        }
        const usage = json === null ? { inputTokens: estimatedInput, outputTokens: 0, estimated: true } : usageOfJsonResponse(json, estimatedInput);
        res.send(status, { "content-type": contentType || "application/json", "x-request-id": requestId }, text);
        this.finish(base, status, "ok", usage);
        return;
      }
      // Not billed: the upstream refused or failed. How the guest hears about it depends on whose fault it is.
      const none = { inputTokens: 0, outputTokens: 0, estimated: false };
      if (status === 401 || status === 403 || status === 407) {
        this.log.error({ request_id: requestId, model, upstream: up.base, upstream_status: status }, "upstream rejected the gateway's credentials");
        this.finish(base, 502, "upstream_error", none);
        return fail(502, "server_error", "upstream_auth_failed", "the model server refused the platform's credentials");
      }
      if (status >= 500 || status < 400) {
        this.log.warn({ request_id: requestId, model, upstream: up.base, upstream_status: status }, "upstream failed");
        this.finish(base, 502, "upstream_error", none);
        return fail(502, "server_error", "upstream_error", `the model server answered ${status}`);
      }
      // 4xx about the request itself (bad parameters, context too long, upstream rate limit): the guest's to see.
      const out: Record<string, string> = { "content-type": contentType.startsWith("application/json") ? contentType : "application/json", "x-request-id": requestId };
      const ra = upRes.headers["retry-after"];
      if (typeof ra === "string" && /^\d{1,6}$/.test(ra)) out["retry-after"] = ra;
      const passBody = contentType.startsWith("application/json") ? text : errorBody("invalid_request_error", "upstream_rejected", `the model server answered ${status}`);
      res.send(status, out, passBody);
      this.finish(base, status, "upstream_error", none);
    } finally {
      req.buffers.release(held);
      clearTimeout(total);
      req.signal.removeEventListener("abort", onCancel);
    }
  }

  private finish(
    b: { endpoint: InferenceEndpoint; access: InstanceAccess; requestId: string; model: string; stream: boolean; prices: Prices; startedAt: Date; t0: number },
    status: number,
    outcome: InferenceOutcome,
    usage: TokenUsage,
  ): void {
    const finishedAt = this.d.clock.now();
    let cost: bigint;
    try {
      cost = requestCostPicoUsd(usage.inputTokens, usage.outputTokens, b.prices);
    } catch (err) {
      this.log.error({ request_id: b.requestId, err: (err as Error).message }, "request cost out of range; recorded as zero");
      cost = 0n;
    }
    const record: InferenceRecord = {
      requestId: b.requestId,
      tenantId: b.access.tenantId,
      instanceId: b.access.instanceId,
      model: b.model,
      endpoint: b.endpoint,
      stream: b.stream,
      status,
      outcome,
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      estimated: usage.estimated,
      priceInputMicroUsd: b.prices.inputMicroUsd,
      priceOutputMicroUsd: b.prices.outputMicroUsd,
      costPicoUsd: cost,
      startedAt: b.startedAt,
      finishedAt,
    };
    this.queue.push(record);
    if (this.queue.length >= this.limits.recordBatch) void this.flush();
    else if (!this.flushTimer) this.flushTimer = setTimeout(() => void this.flush(), this.limits.recordFlushMs);
    const s = this.spend.get(b.access.tenantId);
    if (s && finishedAt.getTime() >= s.start && finishedAt.getTime() < s.end) s.pico += cost;
    this.log.info(
      {
        request_id: b.requestId,
        instance_id: b.access.instanceId,
        tenant_id: b.access.tenantId,
        model: b.model,
        endpoint: b.endpoint,
        stream: b.stream,
        status,
        outcome,
        input_tokens: usage.inputTokens,
        output_tokens: usage.outputTokens,
        estimated: usage.estimated,
        cost_pico_usd: cost.toString(),
        duration_ms: Math.round(performance.now() - b.t0),
      },
      "inference request",
    );
  }

  private parseBody(raw: Buffer): { ok: true; body: Json } | { ok: false; status: number; code: string; message: string } {
    if (raw.length > this.limits.maxRequestBytes) return { ok: false, status: 413, code: "request_too_large", message: `request bodies are limited to ${this.limits.maxRequestBytes} bytes` };
    let body: unknown;
    try {
      body = JSON.parse(raw.toString("utf8"));
    } catch {
      return { ok: false, status: 400, code: "invalid_json", message: "the request body is not valid JSON" };
    }
    if (!isObject(body)) return { ok: false, status: 400, code: "invalid_json", message: "the request body must be a JSON object" };
    return { ok: true, body };
  }

  /**
   * Reserves `pico` of the tenant's budget; returns why not when it does not fit. The check and the
   * reservation run with no await between them, so concurrent calls each see the others' holds: a
   * tenant's settled spend stays within its budget as long as each call costs at most what it
   * reserved (which the capped completion limit makes the upstream enforce).
   */
  private async reserve(a: InstanceAccess, pico: bigint): Promise<string | null> {
    if (this.budgetPico === null) return null;
    const spent = (await this.spendOf(a)).pico;
    const held = this.reserved.get(a.tenantId) ?? 0n;
    if (spent >= this.budgetPico) return `the inference budget of ${this.limits.budgetUsdPerPeriod} USD for this billing period is used up`;
    if (spent + held + pico > this.budgetPico) {
      const left = this.budgetPico - spent - held;
      return `this request may cost up to ${formatUsdMicroCeil(pico)} USD (its input and completion limit), more than the ${formatUsdMicroCeil(left > 0n ? left : 0n)} USD left of the ${this.limits.budgetUsdPerPeriod} USD budget for this billing period after requests in flight; ask for fewer tokens or wait for them to finish`;
    }
    this.reserved.set(a.tenantId, held + pico);
    return null;
  }

  private unreserve(tenantId: number, pico: bigint): void {
    if (this.budgetPico === null) return;
    const left = (this.reserved.get(tenantId) ?? 0n) - pico;
    if (left > 0n) this.reserved.set(tenantId, left);
    else this.reserved.delete(tenantId);
  }

  /** The tenant's spend in the current billing window, read from SQLite once per window and kept up by finish(). */
  private async spendOf(a: InstanceAccess): Promise<{ start: number; end: number; pico: bigint }> {
    const w = billingWindow(a.tenantCreatedAt, this.d.clock.now());
    const cached = this.spend.get(a.tenantId);
    if (cached && cached.start === w.start.getTime()) return cached;
    await this.flush();
    const pico = await this.store.costPicoUsd(a.tenantId, w.start, w.end);
    // Concurrent first requests all read; the first to get here wins, so no later one drops what finish() added since.
    const again = this.spend.get(a.tenantId);
    if (again && again.start === w.start.getTime()) return again;
    const entry = { start: w.start.getTime(), end: w.end.getTime(), pico };
    this.spend.set(a.tenantId, entry);
    return entry;
  }
}
