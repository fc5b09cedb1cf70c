import { newApiKey } from "../auth/api-keys.js";
import type { Clock } from "../clock.js";
import type { ApiKeyStore } from "../store/api-keys.js";
import type { Database } from "../store/db.js";

export class KeyRotationError extends Error {
  override name = "KeyRotationError";
}

/**
 * Issues a new key for the tenant of `prefix` and schedules the old one's revocation `graceMs`
 * from now, in one transaction: there is never a moment with neither key valid. The auth
 * middleware already treats a future `revoked_at` as still valid.
 */
export async function rotateKey(d: { db: Database; keys: ApiKeyStore; clock: Clock }, prefix: string, graceMs: number): Promise<{ apiKey: string; oldKeyValidUntil: Date }> {
  return d.db.tx(async () => {
    const now = d.clock.now();
    const old = await d.keys.byPrefix(prefix);
    const dead = (t: number | null) => t !== null && t <= now.getTime();
    if (!old || dead(old.revoked_at) || dead(old.expires_at)) throw new KeyRotationError(`no active key with prefix ${prefix}`);
    let k = newApiKey();
    while (await d.keys.byPrefix(k.prefix)) k = newApiKey();
    await d.keys.insert({ prefix: k.prefix, tenantId: old.tenant_id, secretHash: k.secretHash, createdAt: now });
    const until = new Date(now.getTime() + graceMs);
    await d.keys.revoke(prefix, until);
    const after = await d.keys.byPrefix(prefix);
    return { apiKey: k.key, oldKeyValidUntil: new Date(after!.revoked_at!) };
  });
}
