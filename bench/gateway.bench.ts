import { join } from "node:path";
import pino from "pino";
import { expect, test } from "vitest";
import { writeFileSync } from "node:fs";
import { systemClock } from "../host/clock.js";
import { InferenceGateway } from "../host/gateway/inference-gateway.js";
import { FakeDriver } from "../test/support/fake-driver.js";
import { startTestDaemon, tempDir } from "../test/support/daemon.js";
import { OpenAiUpstreamTestDouble } from "../test/support/openai-upstream-double.js";
import { sshKeyPair } from "../test/support/ssh-keys.js";
import { readSse, startGuest } from "../test/gateway/harness.js";

/*
 * Gateway overhead per request: the same client (fetch, keep-alive) calls the upstream test double
 * directly, and through the real path a guest uses — the cvm-agent process's loopback gateway, the
 * CBOR channel over a Unix socket, AgentLink, InferenceGateway (store check, limits, metering record)
 * and its HTTP client to the same double. Direct and gateway calls alternate in blocks in the same
 * run, so machine load affects both alike. Everything runs on this host's loopback; the upstream
 * answers at once, so the difference is the gateway's own cost.
 */
const N = Number(process.env.CVM_BENCH_REQUESTS ?? 3000);
const BLOCK = 100;
const STREAM_N = Number(process.env.CVM_BENCH_STREAMS ?? 300);

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(3)} ms  p99 ${pct(xs, 99).toFixed(3)} ms  (n=${xs.length})`;

test("gateway overhead per request vs calling the upstream directly", async () => {
  const dir = tempDir("cvm-bench-gateway-");
  const upstream = new OpenAiUpstreamTestDouble();
  await upstream.start();
  const modelsFile = join(dir.path, "models.json");
  writeFileSync(modelsFile, JSON.stringify({ default: "bench", models: [{ id: "bench", upstream: { base_url: upstream.url, api_key_env: null }, price_per_mtok_usd: { input: "0.15", output: "0.60" } }] }));
  const d = await startTestDaemon({ dataDir: join(dir.path, "data"), driver: new FakeDriver(), env: { CVM_MODELS_FILE: modelsFile } });
  const key = (await d.tenant("bench")).apiKey;
  const created = await d.fetch("/v1/instances", { key, method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ public_key: sshKeyPair("ed25519").public }) });
  const name = created.body.data.name as string;
  for (let i = 0; i < 200 && (await d.fetch(`/v1/instances/${name}`, { key })).body.data.status !== "ready"; i++) await new Promise((r) => setTimeout(r, 10));
  const id = (await d.db.get<{ id: string }>("SELECT id FROM instances WHERE name = ?", [name]))!.id;
  const gateway = new InferenceGateway({
    db: d.db,
    catalogue: d.config.catalogue,
    clock: systemClock,
    logger: pino({ level: "silent" }),
    limits: { requestsPerMinute: 0, budgetUsdPerPeriod: "1000.00" },
  });
  const guest = await startGuest("bench", gateway.handlerFor(id));
  const body = JSON.stringify({ model: "bench", messages: [{ role: "user", content: "count 8" }] });
  const call = async (base: string) => {
    const t0 = performance.now();
    const r = await fetch(`${base}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body });
    await r.arrayBuffer();
    const ms = performance.now() - t0;
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    return ms;
  };
  try {
    for (let i = 0; i < 300; i++) {
      await call(upstream.url);
      await call(guest.gatewayUrl);
    }
    const direct: number[] = [];
    const via: number[] = [];
    for (let done = 0; done < N; done += BLOCK) {
      for (let i = 0; i < BLOCK; i++) direct.push(await call(upstream.url));
      for (let i = 0; i < BLOCK; i++) via.push(await call(guest.gatewayUrl));
    }

    // Streaming: time to first content chunk and to the end, 16 events each.
    const streamBody = JSON.stringify({ model: "bench", stream: true, messages: [{ role: "user", content: "count 16" }] });
    const stream = async (base: string) => {
      const t0 = performance.now();
      const r = await fetch(`${base}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: streamBody });
      const ev = await readSse(r);
      return { first: ev[1]!.at - t0, total: performance.now() - t0, events: ev.length };
    };
    const sDirect: Array<{ first: number; total: number; events: number }> = [];
    const sVia: typeof sDirect = [];
    for (let i = 0; i < STREAM_N; i++) {
      sDirect.push(await stream(upstream.url));
      sVia.push(await stream(guest.gatewayUrl));
    }

    const added50 = pct(via, 50) - pct(direct, 50);
    const added99 = pct(via, 99) - pct(direct, 99);
    console.log(`\ngateway benchmark: ${N} sequential non-streamed chat completions each way, alternating blocks of ${BLOCK}, loopback, keep-alive`);
    console.log(`  direct to upstream double     ${fmt(direct)}`);
    console.log(`  through agent + channel + gw  ${fmt(via)}`);
    console.log(`  added by the gateway path     p50 ${added50.toFixed(3)} ms  p99 ${added99.toFixed(3)} ms`);
    console.log(`  streamed (16 events), first chunk: direct ${fmt(sDirect.map((s) => s.first))} | gateway ${fmt(sVia.map((s) => s.first))}`);
    console.log(`  streamed (16 events), complete:    direct ${fmt(sDirect.map((s) => s.total))} | gateway ${fmt(sVia.map((s) => s.total))}`);
    console.log(`  target: < 1 ms p50 added → ${added50 < 1 ? "met" : "NOT met"}`);
    await gateway.flush();
    const recorded = await gateway.store.forInstance(id, 1_000_000);
    console.log(`  metering records written: ${recorded.length} (every gateway call, warm-up included)`);
    expect(recorded.length).toBe(300 + N + STREAM_N);
    // The gateway asks for usage, so its streams carry one event more (the usage chunk).
    expect(sVia.every((s) => s.events === sDirect[0]!.events + 1)).toBe(true);
  } finally {
    await guest.stop();
    await gateway.close();
    await d.close();
    await upstream.close();
    dir.remove();
  }
});
