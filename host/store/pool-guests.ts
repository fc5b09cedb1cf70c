import type { Database } from "./db.js";
import type { SqlValue } from "./sql-connection.js";

/**
 * `booting`: QEMU started, the agent has not reported `prepared` yet. `warm`: claimable. `claimed`:
 * handed to an instance (the row stays as the guest's history; the instance owns the guest now).
 * `failed`/`gone`: torn down (failed to boot, drained, or resized away).
 */
export type PoolGuestStatus = "booting" | "warm" | "claimed" | "failed" | "gone";

export interface PoolGuest {
  id: string;
  imageId: string;
  status: PoolGuestStatus;
  runtime: Record<string, unknown> | null;
  createdAt: Date;
  warmAt: Date | null;
  claimedAt: Date | null;
  instanceId: string | null;
  endedAt: Date | null;
  note: string | null;
}

interface Row {
  id: string;
  image_id: string;
  status: PoolGuestStatus;
  runtime: string | null;
  created_at: number;
  warm_at: number | null;
  claimed_at: number | null;
  instance_id: string | null;
  ended_at: number | null;
  note: string | null;
}

const date = (ms: number | null) => (ms === null ? null : new Date(ms));

function toGuest(r: Row): PoolGuest {
  return {
    id: r.id,
    imageId: r.image_id,
    status: r.status,
    runtime: r.runtime ? (JSON.parse(r.runtime) as Record<string, unknown>) : null,
    createdAt: new Date(r.created_at),
    warmAt: date(r.warm_at),
    claimedAt: date(r.claimed_at),
    instanceId: r.instance_id,
    endedAt: date(r.ended_at),
    note: r.note,
  };
}

/** The warm pool's guests. Status changes carry the expected previous status, like instances. */
export class PoolGuestStore {
  constructor(private readonly db: Database) {}

  async insert(g: { id: string; imageId: string; createdAt: Date }): Promise<void> {
    await this.db.run(`INSERT INTO pool_guests (id, image_id, status, created_at) VALUES (?, ?, 'booting', ?)`, [g.id, g.imageId, g.createdAt.getTime()]);
  }

  async byId(id: string): Promise<PoolGuest | null> {
    const r = await this.db.get<Row>(`SELECT * FROM pool_guests WHERE id = ?`, [id]);
    return r ? toGuest(r) : null;
  }

  /** Guests that hold resources (booting or warm), oldest first. */
  async live(imageId?: string): Promise<PoolGuest[]> {
    const params: SqlValue[] = [];
    let sql = `SELECT * FROM pool_guests WHERE status IN ('booting','warm')`;
    if (imageId !== undefined) {
      sql += ` AND image_id = ?`;
      params.push(imageId);
    }
    return (await this.db.all<Row>(`${sql} ORDER BY created_at, id`, params)).map(toGuest);
  }

  async setRuntime(id: string, runtime: Record<string, unknown>): Promise<void> {
    await this.db.run(`UPDATE pool_guests SET runtime = ? WHERE id = ?`, [JSON.stringify(runtime), id]);
  }

  async markWarm(id: string, at: Date): Promise<boolean> {
    const r = await this.db.run(`UPDATE pool_guests SET status = 'warm', warm_at = ? WHERE id = ? AND status = 'booting'`, [at.getTime(), id]);
    return r.changes === 1;
  }

  /** Inside the caller's transaction: the oldest warm guest of `imageId` becomes `instanceId`'s, or null. */
  async claimOldest(imageId: string, instanceId: string, at: Date): Promise<PoolGuest | null> {
    const r = await this.db.get<Row>(`SELECT * FROM pool_guests WHERE status = 'warm' AND image_id = ? ORDER BY warm_at, id LIMIT 1`, [imageId]);
    if (!r) return null;
    const moved = await this.db.run(`UPDATE pool_guests SET status = 'claimed', claimed_at = ?, instance_id = ? WHERE id = ? AND status = 'warm'`, [at.getTime(), instanceId, r.id]);
    if (moved.changes !== 1) return null;
    return toGuest({ ...r, status: "claimed", claimed_at: at.getTime(), instance_id: instanceId });
  }

  /** Ends a booting or warm guest; false when it was claimed (or ended) meanwhile. */
  async end(id: string, status: "failed" | "gone", note: string, at: Date): Promise<boolean> {
    const r = await this.db.run(`UPDATE pool_guests SET status = ?, note = ?, ended_at = ? WHERE id = ? AND status IN ('booting','warm')`, [status, note.slice(0, 500), at.getTime(), id]);
    return r.changes === 1;
  }

  async counts(): Promise<Array<{ imageId: string; status: PoolGuestStatus; n: number }>> {
    const rows = await this.db.all<{ image_id: string; status: PoolGuestStatus; n: number }>(`SELECT image_id, status, COUNT(*) AS n FROM pool_guests GROUP BY image_id, status`);
    return rows.map((r) => ({ imageId: r.image_id, status: r.status, n: r.n }));
  }

  /** Ended rows are history only; keep them for a while for `cvmctl pool`, then let them go. */
  async pruneEnded(before: Date): Promise<number> {
    const r = await this.db.run(`DELETE FROM pool_guests WHERE status IN ('failed','gone') AND ended_at < ?`, [before.getTime()]);
    return r.changes;
  }
}

/** Operator settings that must outlive a restart (e.g. a pool size set with `cvmctl pool resize`). */
export class SettingsStore {
  constructor(private readonly db: Database) {}

  async get(key: string): Promise<string | null> {
    return (await this.db.get<{ value: string }>(`SELECT value FROM settings WHERE key = ?`, [key]))?.value ?? null;
  }

  async all(prefix: string): Promise<Map<string, string>> {
    const rows = await this.db.all<{ key: string; value: string }>(`SELECT key, value FROM settings WHERE key LIKE ? ESCAPE '\\'`, [`${prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`]);
    return new Map(rows.map((r) => [r.key, r.value]));
  }

  async set(key: string, value: string, at: Date): Promise<void> {
    await this.db.run(`INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`, [key, value, at.getTime()]);
  }
}
