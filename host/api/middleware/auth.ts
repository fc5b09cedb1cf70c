import { timingSafeEqual } from "node:crypto";
import type { Context, Next } from "koa";
import { parseApiKey, secretMatches } from "../../auth/api-keys.js";
import type { Clock } from "../../clock.js";
import type { ApiKeyRow, ApiKeyStore } from "../../store/api-keys.js";
import type { Tenant } from "../../store/tenants.js";
import { ApiError } from "../errors.js";

export interface AuthDeps {
  keys: ApiKeyStore;
  clock: Clock;
  /** Receives auth failures for the security log; never the token itself. */
  onFailure(ctx: Context, reason: string, prefix?: string): void;
  /** Rate limits around authentication (host/api/middleware/rate-limit.ts); both throw to refuse. */
  limiter?: {
    /** Before the token is looked at. */
    refuseThrottled(ctx: Context): void;
    /** Once the key is known to be genuine. */
    chargeKey(ctx: Context, prefix: string): void;
  };
}

const UNAUTHENTICATED = "missing or invalid Bearer token";

/**
 * Resolves `Authorization: Bearer ca_<8>_<18>` to a tenant; every failure looks the same to the
 * client. Not an async function: when the key is cached (the common case) the request goes on
 * without waiting a turn of the event loop.
 */
export function authenticate(deps: AuthDeps) {
  const secrets = new VerifiedSecrets();

  const admit = (ctx: Context, next: Next, prefix: string, secret: string, found: { key: ApiKeyRow; tenant: Tenant } | undefined) => {
    const row = found?.key;
    if (!row || !secrets.matches(row, secret)) {
      deps.onFailure(ctx, "unknown key", prefix);
      throw new ApiError("unauthenticated", UNAUTHENTICATED);
    }
    const now = deps.clock.now().getTime();
    if ((row.revoked_at !== null && row.revoked_at <= now) || (row.expires_at !== null && row.expires_at <= now)) {
      deps.onFailure(ctx, "revoked key", prefix);
      throw new ApiError("unauthenticated", UNAUTHENTICATED);
    }
    const tenant = found.tenant;
    if (tenant.suspendedAt !== null && tenant.suspendedAt.getTime() <= now) {
      deps.onFailure(ctx, "tenant suspended", prefix);
      throw new ApiError("forbidden", "this tenant is suspended; contact the operator");
    }
    ctx.state.tenant = tenant;
    ctx.state.keyPrefix = prefix;
    deps.limiter?.chargeKey(ctx, prefix);
    return next();
  };

  return (ctx: Context, next: Next): Promise<void> => {
    deps.limiter?.refuseThrottled(ctx);
    const header = ctx.get("Authorization");
    const parsed = header.startsWith("Bearer ") ? parseApiKey(header.slice(7)) : null;
    if (!parsed) {
      deps.onFailure(ctx, header ? "malformed token" : "missing token");
      throw new ApiError("unauthenticated", UNAUTHENTICATED);
    }
    const { prefix, secret } = parsed;
    // Cached: every key or tenant change, from cvmd or cvmctl, invalidates it before the next request.
    const cached = deps.keys.cachedWithTenant(prefix);
    if (cached) return admit(ctx, next, prefix, secret, cached);
    return deps.keys.withTenantCached(prefix).then((found) => admit(ctx, next, prefix, secret, found));
  };
}

/**
 * Checks a presented secret against a key row. The first match for a row is by its stored
 * SHA-256, as always; the matching secret is then kept beside that row object, and later requests
 * are compared with it in constant time instead of hashing again (OpenSSL's per-call set-up made
 * the hash the largest single cost of a cached GET). The kept secret lives only as long as the
 * row object: any change to the key, its tenant or the cache entry makes a new row, which is
 * checked against the hash again.
 */
class VerifiedSecrets {
  private readonly known = new WeakMap<ApiKeyRow, Buffer>();

  matches(row: ApiKeyRow, secret: string): boolean {
    const presented = Buffer.from(secret, "latin1");
    const known = this.known.get(row);
    if (known !== undefined) return known.length === presented.length && timingSafeEqual(known, presented);
    if (!secretMatches(secret, row.secret_hash)) return false;
    this.known.set(row, presented);
    return true;
  }
}
