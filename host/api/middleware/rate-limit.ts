import { isIP } from "node:net";
import type { Context } from "koa";
import type { Logger } from "pino";
import { ApiError } from "../errors.js";
import type { Metrics } from "../../ops/metrics.js";

export interface BucketState {
  allowed: boolean;
  limit: number;
  /** Whole requests left right now. */
  remaining: number;
  /** Seconds until the full allowance is back. */
  resetSeconds: number;
  /** Seconds until one more request is allowed (0 when allowed). */
  retryAfterSeconds: number;
}

const SWEEP_EVERY = 1024;

/**
 * Token buckets per identity: `perMinute` tokens of capacity, refilled continuously at perMinute/60
 * per second, so a client can burst its minute's allowance and then runs at the steady rate. A
 * full bucket is the same as no bucket, which is what the sweep relies on to bound memory.
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private takes = 0;

  constructor(
    readonly perMinute: number,
    private readonly now: () => number,
    private readonly maxEntries = 100_000,
  ) {}

  get size(): number {
    return this.buckets.size;
  }

  take(id: string, cost = 1): BucketState {
    if (++this.takes % SWEEP_EVERY === 0) this.sweep();
    const b = this.refill(id);
    const allowed = b.tokens >= cost;
    if (allowed) b.tokens -= cost;
    return this.state(b.tokens, allowed, cost);
  }

  peek(id: string, cost = 1): BucketState {
    const b = this.buckets.get(id);
    const tokens = b ? Math.min(this.perMinute, b.tokens + (this.now() - b.at) * this.ratePerMs) : this.perMinute;
    return this.state(tokens, tokens >= cost, cost);
  }

  private get ratePerMs(): number {
    return this.perMinute / 60_000;
  }

  private refill(id: string): { tokens: number; at: number } {
    const now = this.now();
    let b = this.buckets.get(id);
    if (!b) {
      b = { tokens: this.perMinute, at: now };
      this.buckets.set(id, b);
      if (this.buckets.size > this.maxEntries) this.sweep();
    } else {
      b.tokens = Math.min(this.perMinute, b.tokens + (now - b.at) * this.ratePerMs);
      b.at = now;
    }
    return b;
  }

  /** True when `id` has no bucket, i.e. a full one: the common case, answered without a BucketState. */
  isFull(id: string): boolean {
    return !this.buckets.has(id);
  }

  private state(tokens: number, allowed: boolean, cost: number): BucketState {
    return {
      allowed,
      limit: this.perMinute,
      remaining: Math.max(0, Math.floor(tokens)),
      resetSeconds: this.secs(this.perMinute - tokens),
      retryAfterSeconds: allowed ? 0 : Math.max(1, this.secs(cost - tokens)),
    };
  }

  private secs(tokens: number): number {
    return Math.max(0, Math.ceil(tokens / this.ratePerMs / 1000));
  }

  private sweep(): void {
    const now = this.now();
    for (const [id, b] of this.buckets) {
      if (b.tokens + (now - b.at) * this.ratePerMs >= this.perMinute) this.buckets.delete(id);
    }
    // Still too many live identities (an address-rotating flood): forget the oldest, which only
    // ever makes the limiter more lenient for them, never stricter for anyone else.
    for (const id of this.buckets.keys()) {
      if (this.buckets.size <= this.maxEntries) break;
      this.buckets.delete(id);
    }
  }
}

/** One IPv6 client normally owns a whole /64, so that is the unit an address limit counts. */
export function addressBucketId(address: string): string {
  if (isIP(address) !== 6) return address;
  const groups = expandIpv6(address);
  return groups ? `${groups.slice(0, 4).join(":")}::/64` : address;
}

function expandIpv6(address: string): string[] | null {
  let a = address.toLowerCase().replace(/%.*$/, "");
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(a);
  if (v4) {
    const [b0, b1, b2, b3] = v4.slice(1).map(Number) as [number, number, number, number];
    a = a.slice(0, v4.index) + `${((b0 << 8) | b1).toString(16)}:${((b2 << 8) | b3).toString(16)}`;
  }
  const [head, tail] = a.split("::") as [string, string | undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const fill = tail === undefined ? [] : Array(8 - h.length - t.length).fill("0");
  const all = [...h, ...fill, ...t];
  return all.length === 8 ? all.map((g) => g.padStart(4, "0")) : null;
}

export interface RateLimitConfig {
  /** 0 turns a limit off. */
  perKeyPerMinute: number;
  perAddressPerMinute: number;
  authFailuresPerMinute: number;
}

export interface RateLimitDeps {
  securityLog: Logger;
  metrics?: Metrics;
  /** Monotonic milliseconds; wall-clock jumps must not refill or drain buckets. */
  now?: () => number;
}

/** Reasons from the auth middleware that are not guesses at a credential. */
const NOT_A_GUESS = new Set(["tenant suspended"]);

/**
 * Per-address and per-key request limits, plus a penalty box for addresses that keep failing
 * authentication. Every response carries the tighter of the applicable limits in X-RateLimit-*.
 */
export class RateLimiter {
  private readonly byAddress: TokenBuckets | null;
  private readonly byKey: TokenBuckets | null;
  private readonly authFailures: TokenBuckets | null;
  private readonly throttled = new Set<string>();
  private readonly limited = new Set<string>();

  constructor(cfg: RateLimitConfig, private readonly deps: RateLimitDeps) {
    const now = deps.now ?? (() => performance.now());
    this.byAddress = cfg.perAddressPerMinute > 0 ? new TokenBuckets(cfg.perAddressPerMinute, now) : null;
    this.byKey = cfg.perKeyPerMinute > 0 ? new TokenBuckets(cfg.perKeyPerMinute, now) : null;
    this.authFailures = cfg.authFailuresPerMinute > 0 ? new TokenBuckets(cfg.authFailuresPerMinute, now) : null;
  }

  /** Charges the client address for every request (after the address was resolved); throws when over. */
  chargeAddress(ctx: Context): void {
    if (!this.byAddress) return;
    const id = bucketOf(ctx);
    this.apply(ctx, id, this.byAddress.take(id), "address");
  }

  /**
   * Before a token is looked at: an address in the penalty box is refused without it (so the
   * answer says nothing about the token).
   */
  refuseThrottled(ctx: Context): void {
    if (!this.authFailures) return;
    const id = bucketOf(ctx);
    // An address that never failed authentication has no bucket: skip computing its state.
    const s = this.authFailures.isFull(id) ? null : this.authFailures.peek(id);
    if (s && !s.allowed) {
      this.deps.metrics?.countRateLimited("auth");
      throw new ApiError("rate_limited", "too many failed authentication attempts from this address; retry later", {
        headers: { "Retry-After": String(s.retryAfterSeconds) },
      });
    }
    this.throttled.delete(id);
  }

  /** Once the key is known to be genuine: charges its own bucket; throws when over. */
  chargeKey(ctx: Context, prefix: string): void {
    if (this.byKey) this.apply(ctx, prefix, this.byKey.take(prefix), "key");
  }

  /** Called by the auth middleware's failure hook. */
  authFailed(ctx: Context, reason: string): void {
    if (!this.authFailures || NOT_A_GUESS.has(reason)) return;
    const addr = address(ctx);
    const id = bucketOf(ctx);
    const s = this.authFailures.take(id);
    if ((!s.allowed || s.remaining === 0) && !this.throttled.has(id)) {
      this.throttled.add(id);
      if (this.throttled.size > 100_000) this.throttled.clear();
      this.deps.securityLog.warn(
        { event: "auth_throttled", ip: addr, bucket: id, retry_after_s: this.authFailures.peek(id).retryAfterSeconds, req_id: ctx.state.requestId },
        "repeated authentication failures; slowing this address down",
      );
    }
  }

  private apply(ctx: Context, id: string, s: BucketState, scope: "address" | "key"): void {
    const shown = ctx.state.rateLimit as BucketState | undefined;
    if (!shown || s.remaining < shown.remaining || !s.allowed) {
      ctx.state.rateLimit = s;
      ctx.set("X-RateLimit-Limit", String(s.limit));
      ctx.set("X-RateLimit-Remaining", String(s.remaining));
      ctx.set("X-RateLimit-Reset", String(s.resetSeconds));
    }
    const episode = `${scope}:${id}`;
    if (s.allowed) {
      this.limited.delete(episode);
      return;
    }
    this.deps.metrics?.countRateLimited(scope);
    // One security-log line per episode, not per refused request: a flood must not flood the log.
    if (!this.limited.has(episode)) {
      if (this.limited.size > 100_000) this.limited.clear();
      this.limited.add(episode);
      this.deps.securityLog.warn(
        { event: "rate_limited", scope, ip: address(ctx), key_prefix: scope === "key" ? id : undefined, limit_per_minute: s.limit, req_id: ctx.state.requestId },
        "rate limit reached",
      );
    }
    throw new ApiError("rate_limited", `rate limit of ${s.limit} requests per minute exceeded; retry after ${s.retryAfterSeconds} s`, {
      headers: { "Retry-After": String(s.retryAfterSeconds) },
    });
  }
}

function address(ctx: Context): string {
  return (ctx.state.clientAddress as string | undefined) ?? ctx.ip;
}

/** The request's address bucket, worked out once per request (the address limit and the auth penalty box both need it). */
function bucketOf(ctx: Context): string {
  const state = ctx.state as { addressBucket?: string };
  return (state.addressBucket ??= addressBucketId(address(ctx)));
}
