import type { Database } from "../store/db.js";
import { formatUsdCents } from "./money.js";

export type InferenceEndpoint = "chat.completions" | "embeddings";
/** ok: upstream answered 2xx; upstream_error: it answered otherwise; cancelled: the guest went away; failed: cut by the gateway (timeout, size, network). */
export type InferenceOutcome = "ok" | "upstream_error" | "cancelled" | "failed";

/** One request that reached an upstream; the unit of inference billing. */
export interface InferenceRecord {
  requestId: string;
  tenantId: number;
  instanceId: string;
  model: string;
  endpoint: InferenceEndpoint;
  stream: boolean;
  /** HTTP status the guest got (or would have, for a cancelled request). */
  status: number;
  outcome: InferenceOutcome;
  inputTokens: number;
  outputTokens: number;
  estimated: boolean;
  priceInputMicroUsd: bigint;
  priceOutputMicroUsd: bigint;
  costPicoUsd: bigint;
  startedAt: Date;
  /** Completion: places the cost in a billing window. */
  finishedAt: Date;
}

/** What the gateway needs to know about the instance behind a channel, read fresh for every request. */
export interface InstanceAccess {
  instanceId: string;
  tenantId: number;
  status: string;
  inferenceMode: string;
  inferenceModel: string;
  tenantCreatedAt: Date;
  tenantSuspended: boolean;
}

export interface InferenceRecordRow {
  request_id: string;
  tenant_id: number;
  instance_id: string;
  model: string;
  endpoint: InferenceEndpoint;
  stream: number;
  status: number;
  outcome: InferenceOutcome;
  input_tokens: number;
  output_tokens: number;
  estimated: number;
  cost_pico_usd: string;
  at: number;
}

/**
 * Per-request inference records (table `inference_requests`, migration 3) and the exact sums over
 * them. Costs are integer picodollars; sums are taken in the database's 64-bit integers split into whole
 * micro-dollars and the picodollar remainder, read back as text, and added as BigInt, so no sum ever
 * passes through a float.
 */
export class InferenceUsageStore {
  constructor(private readonly db: Database) {}

  async access(instanceId: string): Promise<InstanceAccess | undefined> {
    const r = await this.db.get<{
      id: string;
      tenant_id: number;
      status: string;
      inference_mode: string;
      inference_model: string;
      created_at: number;
      suspended_at: number | null;
    }>(
      `SELECT i.id, i.tenant_id, i.status, i.inference_mode, i.inference_model, t.created_at, t.suspended_at
         FROM instances i JOIN tenants t ON t.id = i.tenant_id WHERE i.id = ?`,
      [instanceId],
    );
    if (!r) return undefined;
    return {
      instanceId: r.id,
      tenantId: r.tenant_id,
      status: r.status,
      inferenceMode: r.inference_mode,
      inferenceModel: r.inference_model,
      tenantCreatedAt: new Date(r.created_at),
      tenantSuspended: r.suspended_at !== null,
    };
  }

  async record(rec: InferenceRecord): Promise<void> {
    await this.recordMany([rec]);
  }

  /** Inserts records in one statement per 100 (one implicit transaction each). */
  async recordMany(recs: InferenceRecord[]): Promise<void> {
    for (let i = 0; i < recs.length; i += 100) {
      const batch = recs.slice(i, i + 100);
      await this.db.run(
        `INSERT INTO inference_requests (request_id, tenant_id, instance_id, model, endpoint, stream, status, outcome, input_tokens, output_tokens,
           estimated, price_input_micro_usd, price_output_micro_usd, cost_pico_usd, started_at, at)
         VALUES ${batch.map(() => "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)").join(",")}`,
        // BigInts are bound as decimal text, stored as exact integers (SQLite's INTEGER affinity, PostgreSQL's BIGINT).
        batch.flatMap((rec) => [
          rec.requestId,
          rec.tenantId,
          rec.instanceId,
          rec.model,
          rec.endpoint,
          rec.stream ? 1 : 0,
          rec.status,
          rec.outcome,
          rec.inputTokens,
          rec.outputTokens,
          rec.estimated ? 1 : 0,
          rec.priceInputMicroUsd.toString(),
          rec.priceOutputMicroUsd.toString(),
          rec.costPicoUsd.toString(),
          rec.startedAt.getTime(),
          rec.finishedAt.getTime(),
        ]),
      );
    }
  }

  /** Exact spend of a tenant for requests completed in [from, to). */
  async costPicoUsd(tenantId: number, from: Date, to: Date): Promise<bigint> {
    const r = await this.db.get<{ micro: string | null; rem: string | null }>(
      `SELECT CAST(SUM(cost_pico_usd / 1000000) AS TEXT) AS micro, CAST(SUM(cost_pico_usd % 1000000) AS TEXT) AS rem
         FROM inference_requests WHERE tenant_id = ? AND at >= ? AND at < ?`,
      [tenantId, from.getTime(), to.getTime()],
    );
    return BigInt(r?.micro ?? "0") * 1_000_000n + BigInt(r?.rem ?? "0");
  }

  /** Spend as GET /v1/usage shows it: USD with cents, the exact sum rounded half up once. */
  async costUsd(tenantId: number, from: Date, to: Date): Promise<string> {
    return formatUsdCents(await this.costPicoUsd(tenantId, from, to));
  }

  /** Records of an instance, newest first (operators, tests). */
  async forInstance(instanceId: string, limit = 100): Promise<InferenceRecordRow[]> {
    return this.db.all<InferenceRecordRow>(
      `SELECT request_id, tenant_id, instance_id, model, endpoint, stream, status, outcome, input_tokens, output_tokens, estimated,
              CAST(cost_pico_usd AS TEXT) AS cost_pico_usd, at
         FROM inference_requests WHERE instance_id = ? ORDER BY id DESC LIMIT ?`,
      [instanceId, limit],
    );
  }
}
