import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { systemClock } from "../../host/clock.js";
import { TenantStore } from "../../host/store/tenants.js";
import { InferenceGateway } from "../../host/gateway/inference-gateway.js";
import { formatUsdCents, priceToMicroUsd } from "../../host/gateway/money.js";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { OpenAiUpstreamTestDouble } from "../support/openai-upstream-double.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { readSse, startGuest, type Guest } from "./harness.js";

/*
 * The gateway end to end: a client in the "guest" calls the real cvm-agent's loopback gateway; the
 * agent forwards over the real channel (Unix socket, CBOR frames) to the real AgentLink, whose
 * handler is the InferenceGateway bound to that instance; the gateway calls an OpenAI-compatible
 * upstream test double on 127.0.0.1 and records usage in the daemon's SQLite, which GET /v1/usage reads.
 */

const KEY = "sk-operator-test-0123456789";
const PRICES = {
  "chat-small": { input: "1234.567891", output: "4321.987654" },
  "chat-large": { input: "2.50", output: "10.00" },
  "embed-1": { input: "0.020001", output: "0" },
} as const;

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });

describe("default inference gateway over the agent channel", () => {
  const dir = tempDir("cvm-gateway-test-");
  const upstream = new OpenAiUpstreamTestDouble();
  let d: TestDaemon;
  let gateway: InferenceGateway;
  const tenants: Record<string, string> = {};
  const inst: Record<string, { name: string; id: string; tenant: string }> = {};
  const guests: Guest[] = [];
  let a: Guest; // acme's instance, model chat-small
  let b: Guest; // globex's instance, model chat-large
  const logLines: string[] = [];

  async function createInstance(tenant: string, model: string) {
    const r = await d.fetch("/v1/instances", {
      key: tenants[tenant],
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ public_key: sshKeyPair("ed25519").public, inference_model: model }),
    });
    expect(r.status).toBe(202);
    const name = r.body.data.name as string;
    for (let i = 0; i < 200; i++) {
      if ((await d.fetch(`/v1/instances/${name}`, { key: tenants[tenant] })).body.data.status === "ready") break;
      await new Promise((res) => setTimeout(res, 10));
    }
    const row = await d.db.get<{ id: string }>("SELECT id FROM instances WHERE name = ?", [name]);
    return { name, id: row!.id, tenant };
  }

  beforeAll(async () => {
    await upstream.start();
    upstream.expectedKey = KEY;
    const models = Object.entries(PRICES).map(([id, p]) => ({
      id,
      upstream: { base_url: upstream.url, api_key_env: "CVM_TEST_UPSTREAM_KEY" },
      price_per_mtok_usd: p,
    }));
    const modelsFile = join(dir.path, "models.json");
    writeFileSync(modelsFile, JSON.stringify({ default: "chat-small", models }));
    d = await startTestDaemon({ dataDir: join(dir.path, "data"), driver: new FakeDriver(), env: { CVM_MODELS_FILE: modelsFile } });
    tenants.acme = (await d.tenant("acme")).apiKey;
    tenants.globex = (await d.tenant("globex")).apiKey;
    inst.a = await createInstance("acme", "chat-small");
    inst.b = await createInstance("globex", "chat-large");
    gateway = new InferenceGateway({
      db: d.db,
      catalogue: d.config.catalogue,
      clock: systemClock,
      logger: pino({ level: "debug" }, { write: (line: string) => void logLines.push(line) }),
      env: { CVM_TEST_UPSTREAM_KEY: KEY },
      limits: { upstreamHeadersTimeoutMs: 1500, upstreamIdleTimeoutMs: 1500 },
    });
    a = await startGuest("a", gateway.handlerFor(inst.a!.id));
    b = await startGuest("b", gateway.handlerFor(inst.b!.id));
    guests.push(a, b);
  }, 120_000);

  afterAll(async () => {
    for (const g of guests) await g.stop();
    await gateway?.close();
    await d?.close();
    await upstream.close();
    dir.remove();
  });

  beforeEach(() => upstream.reset());

  // Records are written behind the responses (batched); flush() makes the ones of finished requests visible.
  const usageOf = async (tenant: string) => {
    await gateway.flush();
    return (await d.fetch("/v1/usage", { key: tenants[tenant] })).body.data.usage.inference_cost_usd as string;
  };
  const records = async (id: string) => {
    await gateway.flush();
    return gateway.store.forInstance(id, 1000);
  };
  const spentPico = async (tenantId: number) => {
    await gateway.flush();
    return gateway.store.costPicoUsd(tenantId, new Date(0), new Date(8.64e15));
  };

  test("non-streamed completion and /v1/models: the operator's key is added, the guest's headers are not forwarded", async () => {
    const models = await fetch(`${a.gatewayUrl}/models`);
    expect(await models.json()).toEqual({ object: "list", data: [{ id: "chat-small", object: "model", created: 0, owned_by: "cvm" }] });

    const r = await post(`${a.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 4 please" }] }, { authorization: "Bearer cvm-gateway", "x-cvm-instance": inst.b!.id });
    expect(r.status).toBe(200);
    expect(r.headers.get("x-request-id")).toMatch(/^gw_[0-9a-f]{24}$/);
    const j = (await r.json()) as any;
    expect(j.choices[0].message.content).toBe("w1 w2 w3 w4");
    expect(j.usage).toEqual({ prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 });
    expect(upstream.requests).toHaveLength(1);
    const seen = upstream.requests[0]!;
    expect(seen.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(seen.headers["x-cvm-instance"]).toBeUndefined();
    expect(seen.body.model).toBe("chat-small"); // the instance's model fills in when the request names none
  });

  test("SSE streaming: chunks arrive in order and as they are produced; usage is requested upstream and metered", async () => {
    upstream.chunkDelayMs = 30;
    const t0 = performance.now();
    const r = await post(`${a.gatewayUrl}/chat/completions`, { model: "chat-small", stream: true, messages: [{ role: "user", content: "count 12" }] });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/event-stream");
    const events = await readSse(r);
    expect(events.at(-1)!.data).toBe("[DONE]");
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e.data));
    const text = parsed.map((p) => p.choices[0]?.delta?.content ?? "").join("");
    expect(text).toBe(Array.from({ length: 12 }, (_, i) => `w${i + 1}`).join(" "));
    // The gateway asked for usage even though the client did not; the usage chunk is passed on.
    expect(upstream.requests[0]!.body.stream_options).toEqual({ include_usage: true });
    expect(parsed.at(-1).usage).toEqual({ prompt_tokens: 2, completion_tokens: 12, total_tokens: 14 });
    // Streamed, not buffered: the first word arrived long before the last was generated (12 × 30 ms).
    const wordAt = (w: string) => events[parsed.findIndex((p) => p.choices[0]?.delta?.content?.trim() === w)]!.at;
    const firstWord = wordAt("w1");
    const lastWord = wordAt("w12");
    expect(lastWord - firstWord).toBeGreaterThan(200);
    expect(firstWord - t0).toBeLessThan(lastWord - t0 - 200);
    const rec = (await records(inst.a!.id))[0]!;
    expect(rec).toMatchObject({ stream: 1, status: 200, outcome: "ok", input_tokens: 2, output_tokens: 12, estimated: 0 });
  });

  test("GET /v1/usage shows the exact cost of a scripted mix of calls", async () => {
    const before = await spentPico(1);
    const acmeId = (await d.db.get<{ tenant_id: number }>("SELECT tenant_id FROM instances WHERE id = ?", [inst.a!.id]))!.tenant_id;
    expect(acmeId).toBe(1);
    // 5 plain calls, 3 streamed calls (2 of them concurrent), one call to a model the instance may not use.
    for (let i = 1; i <= 5; i++) expect((await post(`${a.gatewayUrl}/chat/completions`, { messages: [{ role: "system", content: "be brief" }, { role: "user", content: `count ${i * 7} words of text` }] })).status).toBe(200);
    const streams = await Promise.all(
      [9, 31, 2].map(async (n) => readSse(await post(`${a.gatewayUrl}/chat/completions`, { stream: true, stream_options: { include_usage: false }, messages: [{ role: "user", content: `count ${n}` }] }))),
    );
    expect(streams.every((s) => s.at(-1)!.data === "[DONE]")).toBe(true);
    const refused = await post(`${a.gatewayUrl}/chat/completions`, { model: "chat-large", messages: [{ role: "user", content: "count 1" }] });
    expect(refused.status).toBe(403);
    expect(((await refused.json()) as any).error.code).toBe("model_not_allowed");

    const p = { in: priceToMicroUsd(PRICES["chat-small"].input), out: priceToMicroUsd(PRICES["chat-small"].output) };
    expect(upstream.usages).toHaveLength(8);
    let expected = before;
    for (const u of upstream.usages) expected += BigInt(u.prompt_tokens) * p.in + BigInt(u.completion_tokens) * p.out;
    expect(await spentPico(1)).toBe(expected);
    const shown = await usageOf("acme");
    expect(shown).toBe(formatUsdCents(expected));
    expect(shown).toMatch(/^\d+\.\d{2}$/);
    expect(Number(shown)).toBeGreaterThan(0.5); // these prices make the mix cost real money
    // The other tenant's spend is untouched by acme's traffic.
    expect(await usageOf("globex")).toBe("0.00");
  });

  test("usage missing upstream: the gateway counts, and marks the record estimated", async () => {
    upstream.omitUsage = true;
    const r = await post(`${a.gatewayUrl}/chat/completions`, { stream: true, messages: [{ role: "user", content: "count 16" }] });
    await readSse(r);
    const rec = (await records(inst.a!.id))[0]!;
    expect(rec.estimated).toBe(1);
    expect(rec.output_tokens).toBeGreaterThan(0);
    expect(rec.input_tokens).toBeGreaterThan(0);
    expect(BigInt(rec.cost_pico_usd)).toBe(
      BigInt(rec.input_tokens) * priceToMicroUsd(PRICES["chat-small"].input) + BigInt(rec.output_tokens) * priceToMicroUsd(PRICES["chat-small"].output),
    );
  });

  test("a guest cannot use the gateway as another instance: its channel decides, whatever it sends", async () => {
    const acmeBefore = await usageOf("acme");
    // Guest B names A's model and carries A's identifiers in every place a request could.
    const spoof = { authorization: `Bearer ${tenants.acme}`, "x-cvm-instance": inst.a!.id, "x-instance-id": inst.a!.id, "openai-organization": "acme" };
    const asA = await post(`${b.gatewayUrl}/chat/completions?instance=${inst.a!.id}`, { model: "chat-small", user: inst.a!.id, messages: [{ role: "user", content: "count 2" }] }, spoof);
    expect(asA.status).toBe(403);
    expect(((await asA.json()) as any).error).toMatchObject({ code: "model_not_allowed", message: "this instance may use chat-large only" });
    expect(upstream.requests).toHaveLength(0);
    const ok = await post(`${b.gatewayUrl}/chat/completions?instance=${inst.a!.id}`, { user: inst.a!.id, messages: [{ role: "user", content: "count 3" }] }, spoof);
    expect(ok.status).toBe(200);
    expect(upstream.requests[0]!.body.model).toBe("chat-large");
    for (const h of Object.keys(spoof)) if (h !== "authorization") expect(upstream.requests[0]!.headers[h]).toBeUndefined();
    expect(upstream.requests[0]!.headers.authorization).toBe(`Bearer ${KEY}`);
    // Billed to B (globex), not to A (acme).
    const recB = await records(inst.b!.id);
    expect(recB).toHaveLength(1);
    expect(recB[0]).toMatchObject({ tenant_id: 2, model: "chat-large", input_tokens: 2, output_tokens: 3 });
    expect(await usageOf("acme")).toBe(acmeBefore);
    // 2 × $2.50/M + 3 × $10/M = $0.000035 → rounds to 0.00, exactly 35,000,000 p$ in the store.
    expect(await spentPico(2)).toBe(35_000_000n);
  });

  test("embeddings go through for an instance whose model is an embedding model only if it is its own", async () => {
    const r = await post(`${a.gatewayUrl}/embeddings`, { model: "embed-1", input: "three words here" });
    expect(r.status).toBe(403);
    const m = await post(`${a.gatewayUrl}/embeddings`, { input: ["a b", "c"] });
    // The instance's model is a chat model; the upstream decides what that means — here the double embeds anyway.
    expect(m.status).toBe(200);
    expect(((await m.json()) as any).usage).toEqual({ prompt_tokens: 3, total_tokens: 3 });
    expect((await records(inst.a!.id))[0]).toMatchObject({ endpoint: "embeddings", input_tokens: 3, output_tokens: 0, estimated: 0 });
  });

  test("upstream failures map to clear errors: 5xx → 502, bad key → 502, silence → 504, 4xx passed on", async () => {
    upstream.failStatus = 500;
    let r = await post(`${a.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "x" }] });
    expect(r.status).toBe(502);
    expect(((await r.json()) as any).error).toMatchObject({ type: "server_error", code: "upstream_error" });

    upstream.failStatus = 400;
    r = await post(`${a.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "x" }] });
    expect(r.status).toBe(400);
    expect(((await r.json()) as any).error.message).toBe("scripted failure 400");

    upstream.failStatus = null;
    upstream.expectedKey = "a-different-key";
    r = await post(`${a.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "x" }] });
    expect(r.status).toBe(502);
    const body = await r.text();
    expect(JSON.parse(body).error.code).toBe("upstream_auth_failed");
    expect(body).not.toContain("sk-"); // the upstream's message (which echoes key fragments) is not passed on
    upstream.expectedKey = KEY;

    upstream.hang = true;
    const t0 = performance.now();
    r = await post(`${a.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "x" }] });
    expect(r.status).toBe(504);
    expect(((await r.json()) as any).error.code).toBe("upstream_timeout");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(1400);
    upstream.hang = false;

    // A stream that stalls mid-way is cut (the client sees an error, not a clean end) and its tokens so far are billed.
    upstream.stallAfterEvents = 3;
    r = await post(`${a.gatewayUrl}/chat/completions`, { stream: true, messages: [{ role: "user", content: "count 10" }] });
    expect(r.status).toBe(200);
    await expect(readSse(r)).rejects.toThrow();
    const rec = (await records(inst.a!.id))[0]!;
    expect(rec).toMatchObject({ outcome: "failed", estimated: 1 });
    expect(rec.output_tokens).toBeGreaterThan(0);
  });

  test("a client that goes away mid-stream cancels the upstream call; the record says cancelled", async () => {
    upstream.chunkDelayMs = 50;
    const ctl = new AbortController();
    const r = await fetch(`${a.gatewayUrl}/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ stream: true, messages: [{ role: "user", content: "count 40" }] }),
      signal: ctl.signal,
    });
    const reader = r.body!.getReader();
    await reader.read();
    ctl.abort();
    for (let i = 0; i < 100 && upstream.abandoned === 0; i++) await new Promise((res) => setTimeout(res, 20));
    expect(upstream.abandoned).toBe(1);
    for (let i = 0; i < 100 && (await records(inst.a!.id))[0]!.outcome !== "cancelled"; i++) await new Promise((res) => setTimeout(res, 20));
    expect((await records(inst.a!.id))[0]).toMatchObject({ outcome: "cancelled" });
  });

  test("limits: requests per minute and the tenant budget give OpenAI-style 429s", async () => {
    const limited = new InferenceGateway({
      db: d.db,
      catalogue: d.config.catalogue,
      clock: systemClock,
      logger: pino({ level: "silent" }),
      env: { CVM_TEST_UPSTREAM_KEY: KEY },
      limits: { requestsPerMinute: 2 },
      monotonicMs: () => 0, // frozen: no refill during the test
    });
    b.link.onGatewayRequest(limited.handlerFor(inst.b!.id));
    try {
      const codes = [];
      for (let i = 0; i < 3; i++) codes.push((await post(`${b.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 1" }] })).status);
      expect(codes).toEqual([200, 200, 429]);
      const r = await post(`${b.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 1" }] });
      expect(r.headers.get("retry-after")).toMatch(/^\d+$/);
      expect(((await r.json()) as any).error).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
    } finally {
      await limited.close();
    }

    await gateway.flush();
    // globex has spent 0.000035 + 2 × 0.000015 USD so far. A call reserves what it may cost at most
    // (here 37 input bytes × $2.50/M + max_tokens 1 × $10/M = $0.0001025): with $0.000005 left it is refused
    // before it runs; with $0.000105 left it runs, is settled at $0.000015, and the one after it no longer fits.
    const budgeted = (usd: string) =>
      new InferenceGateway({
        db: d.db,
        catalogue: d.config.catalogue,
        clock: systemClock,
        logger: pino({ level: "silent" }),
        env: { CVM_TEST_UPSTREAM_KEY: KEY },
        limits: { budgetUsdPerPeriod: usd },
      });
    const tight = budgeted("0.00007");
    b.link.onGatewayRequest(tight.handlerFor(inst.b!.id));
    const one = { max_tokens: 1, messages: [{ role: "user", content: "count 1" }] };
    try {
      const r = await post(`${b.gatewayUrl}/chat/completions`, one);
      expect(r.status).toBe(429);
      const e = ((await r.json()) as any).error;
      expect(e).toMatchObject({ type: "insufficient_quota", code: "insufficient_quota" });
      expect(e.message).toContain("may cost up to 0.000103 USD"); // rounded up
    } finally {
      await tight.close();
    }
    const roomy = budgeted("0.00017");
    b.link.onGatewayRequest(roomy.handlerFor(inst.b!.id));
    try {
      expect((await post(`${b.gatewayUrl}/chat/completions`, one)).status).toBe(200);
      const r = await post(`${b.gatewayUrl}/chat/completions`, one);
      expect(r.status).toBe(429);
      expect(((await r.json()) as any).error).toMatchObject({ type: "insufficient_quota", code: "insufficient_quota" });
    } finally {
      await roomy.close();
      b.link.onGatewayRequest(gateway.handlerFor(inst.b!.id));
    }
  });

  test("only fields billed as tokens are forwarded: anything else is refused with a 400 naming it, and never reaches the upstream", async () => {
    const msg = [{ role: "user", content: "count 2" }];
    const refusedWith = async (path: string, body: Record<string, unknown>, param: string) => {
      const r = await post(`${b.gatewayUrl}/${path}`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      const e = ((await r.json()) as any).error;
      expect(e).toMatchObject({ type: "invalid_request_error", code: "unsupported_parameter", param });
      expect(e.message).toContain(param);
    };
    for (const [field, value] of Object.entries({
      service_tier: "priority",
      audio: { voice: "alloy", format: "wav" },
      modalities: ["text", "audio"],
      web_search_options: {},
      store: true,
      metadata: { a: "b" },
      prediction: { type: "content", content: "x" },
      functions: [],
      instance_id: inst.a!.id,
    })) {
      await refusedWith("chat/completions", { messages: msg, [field]: value }, field);
    }
    await refusedWith("chat/completions", { messages: msg, tools: [{ type: "function", function: { name: "f", parameters: {} } }, { type: "web_search" }] }, "tools[1].type");
    await refusedWith("chat/completions", { messages: [{ role: "user", content: [{ type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }] }] }, "messages[0].content[0].type");
    await refusedWith("chat/completions", { messages: msg, stream: true, stream_options: { include_usage: true, include_obfuscation: true } }, "stream_options.include_obfuscation");
    await refusedWith("chat/completions", { messages: msg, n: 1000 }, "n");
    await refusedWith("embeddings", { input: "a b", user: "u", service_tier: "flex" }, "service_tier");
    expect(upstream.requests).toHaveLength(0);

    // What is on the list goes through as sent (bar the completion limit, which the gateway caps).
    const ok = { messages: [{ role: "user", content: [{ type: "text", text: "count 2" }] }], store: false, stream_options: { include_usage: true }, max_completion_tokens: 50, temperature: 0.2, top_p: 0.9, seed: 7, stop: ["\n\n"], user: "u1", tools: [{ type: "function", function: { name: "f", parameters: {} } }], tool_choice: "auto", response_format: { type: "text" } };
    expect((await post(`${b.gatewayUrl}/chat/completions`, ok)).status).toBe(200);
    expect((await post(`${b.gatewayUrl}/embeddings`, { input: ["a b"], encoding_format: "float", dimensions: 3 })).status).toBe(200);
    expect(upstream.requests).toHaveLength(2);
    expect(upstream.requests[0]!.body).toEqual({ ...ok, model: "chat-large" });
    expect(upstream.requests[1]!.body).toEqual({ input: ["a b"], encoding_format: "float", dimensions: 3, model: "chat-large" });
  });

  test("the completion limit is capped (or set) by the gateway, so the upstream enforces what was reserved", async () => {
    const capped = new InferenceGateway({ db: d.db, catalogue: d.config.catalogue, clock: systemClock, logger: pino({ level: "silent" }), env: { CVM_TEST_UPSTREAM_KEY: KEY }, limits: { maxOutputTokens: 5 } });
    b.link.onGatewayRequest(capped.handlerFor(inst.b!.id));
    try {
      for (const extra of [{}, { max_tokens: 1000 }, { max_completion_tokens: 1000 }, { max_tokens: 3 }]) {
        const r = await post(`${b.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 50" }], ...extra });
        expect(r.status).toBe(200);
        expect(((await r.json()) as any).usage.completion_tokens).toBe("max_tokens" in extra && extra.max_tokens === 3 ? 3 : 5);
      }
      expect(upstream.requests.map((q) => q.body.max_tokens ?? q.body.max_completion_tokens)).toEqual([5, 5, 5, 3]);
    } finally {
      await capped.close();
      b.link.onGatewayRequest(gateway.handlerFor(inst.b!.id));
    }
  });

  test("what the gateway holds of a guest's traffic counts against its buffer: a response over it is a 429, recorded once in the security log", async () => {
    const security: string[] = [];
    const small = new InferenceGateway({
      db: d.db,
      catalogue: d.config.catalogue,
      clock: systemClock,
      logger: pino({ level: "silent" }),
      securityLog: pino({ level: "info" }, { write: (l: string) => void security.push(l) }),
      env: { CVM_TEST_UPSTREAM_KEY: KEY },
      limits: { maxBufferedBytesPerGuest: 4096 },
    });
    const handler = small.handlerFor(inst.b!.id);
    b.link.onGatewayRequest(handler);
    try {
      // ~3 KB of request and payload fit; the ~9 KB answer to "count 1500" does not.
      for (let i = 0; i < 2; i++) {
        const r = await post(`${b.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 1500" }] });
        expect(r.status).toBe(429);
        expect(((await r.json()) as any).error).toMatchObject({ type: "rate_limit_exceeded", code: "buffer_limit_exceeded" });
        expect(handler.buffers!.held).toBe(0);
      }
      expect(upstream.requests).toHaveLength(2);
      await small.flush();
      expect((await small.store.forInstance(inst.b!.id, 2)).map((r) => [r.status, r.outcome, r.estimated])).toEqual([
        [429, "failed", 1],
        [429, "failed", 1],
      ]);
      // Each call is its own episode here: the guest holds nothing between them.
      expect(security.map((l) => JSON.parse(l)).filter((e) => e.event === "gateway_buffer_limit")).toHaveLength(2);
      expect(JSON.parse(security[0]!)).toMatchObject({ instance_id: inst.b!.id, capacity_bytes: 4096 });
      // A small answer still fits.
      expect((await post(`${b.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 3" }] })).status).toBe(200);
    } finally {
      await small.close();
      b.link.onGatewayRequest(gateway.handlerFor(inst.b!.id));
    }
  });

  test("N concurrent calls cannot overshoot the tenant's budget: each reserves its most before it runs and settles after", async () => {
    // A tenant of its own, so its spend starts at zero.
    tenants.initech = (await d.tenant("initech")).apiKey;
    inst.c = await createInstance("initech", "chat-large");
    const c = await startGuest("c", null);
    guests.push(c);
    const tenantId = (await d.db.get<{ tenant_id: number }>("SELECT tenant_id FROM instances WHERE id = ?", [inst.c!.id]))!.tenant_id;
    const messages = [{ role: "user", content: "count 20" }];
    const p = { in: priceToMicroUsd(PRICES["chat-large"].input), out: priceToMicroUsd(PRICES["chat-large"].output) };
    // The most one call may cost: a token per input byte, and its max_tokens of output.
    const reserve = BigInt(Buffer.byteLength(JSON.stringify(messages))) * p.in + 20n * p.out;
    const budgetPico = ((reserve * 7n) / 2n / 1_000_000n) * 1_000_000n; // room for 3.5 reservations
    const budgetUsd = `0.${(budgetPico / 1_000_000n).toString().padStart(6, "0")}`;
    const budgeted = new InferenceGateway({ db: d.db, catalogue: d.config.catalogue, clock: systemClock, logger: pino({ level: "silent" }), env: { CVM_TEST_UPSTREAM_KEY: KEY }, limits: { budgetUsdPerPeriod: budgetUsd } });
    c.link.onGatewayRequest(budgeted.handlerFor(inst.c!.id));
    try {
      // Slow streams (20 × 20 ms), so all N are in flight together: a check against settled spend alone lets all N through.
      upstream.chunkDelayMs = 20;
      const N = 10;
      const results = await Promise.all(
        Array.from({ length: N }, async () => {
          const r = await post(`${c.gatewayUrl}/chat/completions`, { stream: true, max_tokens: 20, messages });
          if (r.status !== 200) return { status: r.status, code: ((await r.json()) as any).error.code as string };
          return { status: 200, code: (await readSse(r)).at(-1)!.data };
        }),
      );
      expect(results.filter((x) => x.status === 200)).toEqual([{ status: 200, code: "[DONE]" }, { status: 200, code: "[DONE]" }, { status: 200, code: "[DONE]" }]);
      expect(results.filter((x) => x.status === 429).every((x) => x.code === "insufficient_quota")).toBe(true);
      await budgeted.flush();
      const spent = await budgeted.store.costPicoUsd(tenantId, new Date(0), new Date(8.64e15));
      const oneCall = 2n * p.in + 20n * p.out; // what the double bills for "count 20" with max_tokens 20
      expect(spent).toBe(3n * oneCall);
      expect(spent).toBeLessThanOrEqual(budgetPico);
      // Settled: the reservations are gone; a failed call gives its reservation back too...
      expect(budgeted.reservedPico(tenantId)).toBe(0n);
      upstream.failStatus = 500;
      expect((await post(`${c.gatewayUrl}/chat/completions`, { max_tokens: 20, messages })).status).toBe(502);
      upstream.failStatus = null;
      expect(budgeted.reservedPico(tenantId)).toBe(0n);
      // ...so the budget the calls did not use is free again...
      expect((await post(`${c.gatewayUrl}/chat/completions`, { max_tokens: 20, messages })).status).toBe(200);
      // ...and with 4 calls settled, a fifth does not fit.
      const last = await post(`${c.gatewayUrl}/chat/completions`, { max_tokens: 20, messages });
      expect(last.status).toBe(429);
      await budgeted.flush();
      expect(await budgeted.store.costPicoUsd(tenantId, new Date(0), new Date(8.64e15))).toBe(4n * oneCall);
    } finally {
      await budgeted.close();
    }
  });

  test("a terminated instance's (and a suspended tenant's) calls are refused, checked against the store on each request", async () => {
    expect((await post(`${a.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 1" }] })).status).toBe(200);
    const del = await d.fetch(`/v1/instances/${inst.a!.name}`, { key: tenants.acme, method: "DELETE" });
    expect(del.status).toBeLessThan(300);
    for (let i = 0; i < 200; i++) {
      if ((await d.fetch(`/v1/instances/${inst.a!.name}`, { key: tenants.acme })).body.data.status === "terminated") break;
      await new Promise((res) => setTimeout(res, 10));
    }
    upstream.reset();
    const costBefore = await usageOf("acme");
    const r = await post(`${a.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 1" }] });
    expect(r.status).toBe(403);
    expect(((await r.json()) as any).error).toMatchObject({ type: "permission_error", code: "instance_not_active" });
    expect((await fetch(`${a.gatewayUrl}/models`)).status).toBe(403);
    expect(upstream.requests).toHaveLength(0);
    expect(await usageOf("acme")).toBe(costBefore);
    // The other instance is unaffected...
    expect((await post(`${b.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 1" }] })).status).toBe(200);
    // ...until its tenant is suspended (revoked), which the next request sees.
    const tenantsStore = new TenantStore(d.db);
    await tenantsStore.setSuspended("globex", new Date());
    const r2 = await post(`${b.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 1" }] });
    expect(r2.status).toBe(403);
    expect(((await r2.json()) as any).error.code).toBe("tenant_suspended");
    await tenantsStore.setSuspended("globex", null);
    expect((await post(`${b.gatewayUrl}/chat/completions`, { messages: [{ role: "user", content: "count 1" }] })).status).toBe(200);
    expect(upstream.requests).toHaveLength(2);
  });

  test("logs carry request metadata, never prompts, completions or the upstream key (host and agent)", async () => {
    await gateway.flush();
    const host = logLines.join("");
    expect(logLines.filter((l) => l.includes('"msg":"inference request"')).length).toBeGreaterThan(10);
    expect(host).toContain('"cost_pico_usd"');
    const agentLog = readFileSync(a.agent.logPath, "utf8");
    expect(agentLog).toContain("inference gateway listening");
    for (const text of [host, agentLog]) {
      expect(text).not.toContain(KEY);
      expect(text).not.toContain("be brief"); // a system prompt sent above
      expect(text).not.toContain("count 4 please");
      expect(text).not.toContain('"w1 w2');
    }
  });
});
