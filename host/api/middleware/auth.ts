import type { Context, Next } from "koa";
import { parseApiKey, secretMatches } from "../../auth/api-keys.js";
import type { Clock } from "../../clock.js";
import type { ApiKeyStore } from "../../store/api-keys.js";
import type { Tenant, TenantStore } from "../../store/tenants.js";
import { ApiError } from "../errors.js";

export interface AuthDeps {
  keys: ApiKeyStore;
  tenants: TenantStore;
  clock: Clock;
  /** Receives auth failures for the security log; never the token itself. */
  onFailure(ctx: Context, reason: string, prefix?: string): void;
}

const UNAUTHENTICATED = "missing or invalid Bearer token";

/** Resolves `Authorization: Bearer ca_<8>_<18>` to a tenant; every failure looks the same to the client. */
export function authenticate(deps: AuthDeps) {
  return async (ctx: Context, next: Next) => {
    const header = ctx.get("Authorization");
    const m = /^Bearer ([^\s]+)$/.exec(header);
    const parsed = m ? parseApiKey(m[1]!) : null;
    if (!parsed) {
      deps.onFailure(ctx, header ? "malformed token" : "missing token");
      throw new ApiError("unauthenticated", UNAUTHENTICATED);
    }
    // Cached: every key or tenant change, from cvmd or cvmctl, invalidates it before the next request.
    const found = await deps.keys.withTenantCached(parsed.prefix);
    const row = found?.key;
    const now = deps.clock.now().getTime();
    if (!row || !secretMatches(parsed.secret, row.secret_hash)) {
      deps.onFailure(ctx, "unknown key", parsed.prefix);
      throw new ApiError("unauthenticated", UNAUTHENTICATED);
    }
    if ((row.revoked_at !== null && row.revoked_at <= now) || (row.expires_at !== null && row.expires_at <= now)) {
      deps.onFailure(ctx, "revoked key", parsed.prefix);
      throw new ApiError("unauthenticated", UNAUTHENTICATED);
    }
    const tenant = found.tenant;
    if (tenant.suspendedAt !== null && tenant.suspendedAt.getTime() <= now) {
      deps.onFailure(ctx, "tenant suspended", parsed.prefix);
      throw new ApiError("forbidden", "this tenant is suspended; contact the operator");
    }
    ctx.state.tenant = tenant satisfies Tenant;
    ctx.state.keyPrefix = parsed.prefix;
    await next();
  };
}
