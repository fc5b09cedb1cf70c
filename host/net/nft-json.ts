/**
 * Reader for `nft -j list table <family> <name>` and the per-kind object listings (JSON schema
 * version 1, as printed by nft 1.0.6).
 * Only the parts cvmd acts on are typed; anything else in the listing is ignored, and anything that
 * is present but malformed is an error rather than a silent zero.
 */

export class NftJsonError extends Error {
  override name = "NftJsonError";
}

export interface NftCounter {
  name: string;
  packets: number;
  bytes: number;
  comment?: string;
}

export interface NftQuota {
  name: string;
  /** The quota's threshold in bytes. */
  limitBytes: number;
  /** Bytes the kernel has charged to the quota so far (every packet that evaluated it). */
  usedBytes: number;
  /** `quota over`: the expression matches once the threshold is reached. */
  over: boolean;
  comment?: string;
}

export interface NftRule {
  chain: string;
  handle: number;
  comment?: string;
  /** Statements as nft printed them; kept raw because their schema is large and cvmd only inspects a few. */
  expr: unknown[];
}

export interface NftChain {
  name: string;
  handle: number;
  /** Present on base chains only. */
  hook?: { type: string; hook: string; prio: number; policy: string };
  rules: NftRule[];
}

export interface NftTableListing {
  family: string;
  name: string;
  counters: Map<string, NftCounter>;
  quotas: Map<string, NftQuota>;
  chains: Map<string, NftChain>;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function str(o: Json, key: string, what: string): string {
  const v = o[key];
  if (typeof v !== "string") throw new NftJsonError(`${what}: "${key}" is not a string`);
  return v;
}

function optStr(o: Json, key: string, what: string): string | undefined {
  return o[key] === undefined ? undefined : str(o, key, what);
}

/** JSON numbers above 2^53 would be silently rounded by JSON.parse; refuse them instead of reporting a wrong count. */
function uint(o: Json, key: string, what: string): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new NftJsonError(`${what}: "${key}" is not a non-negative safe integer`);
  return v;
}

function int(o: Json, key: string, what: string): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new NftJsonError(`${what}: "${key}" is not an integer`);
  return v;
}

/**
 * nft running several list commands in one invocation prints one JSON document per command, one
 * per line (JSON strings cannot contain a raw newline, so splitting on lines is exact).
 */
function entriesOf(text: string): unknown[] {
  const docs = text.split("\n").filter((l) => l.trim() !== "");
  if (docs.length === 0) throw new NftJsonError("nft printed nothing");
  const all: unknown[] = [];
  for (const line of docs) {
    let doc: unknown;
    try {
      doc = JSON.parse(line);
    } catch (err) {
      throw new NftJsonError(`nft output is not JSON: ${(err as Error).message}`);
    }
    if (!isObject(doc) || !Array.isArray(doc.nftables)) throw new NftJsonError(`nft output has no "nftables" array`);
    for (const e of doc.nftables as unknown[]) all.push(e);
  }
  return all;
}

/**
 * Parses what nft printed for one table: `list table`, or `list counters table` / `list quotas
 * table` (which print no table entry). Entries of another table or family are skipped.
 */
export function parseNftTableListing(text: string, family: string, table: string): NftTableListing {
  const out: NftTableListing = { family, name: table, counters: new Map(), quotas: new Map(), chains: new Map() };
  const pendingRules: NftRule[] = [];

  for (const [i, entry] of entriesOf(text).entries()) {
    if (!isObject(entry)) throw new NftJsonError(`nftables[${i}] is not an object`);
    const kinds = Object.keys(entry);
    if (kinds.length !== 1) throw new NftJsonError(`nftables[${i}] has ${kinds.length} keys, expected 1`);
    const kind = kinds[0]!;
    const body = entry[kind];
    if (!isObject(body)) throw new NftJsonError(`nftables[${i}].${kind} is not an object`);
    if (kind === "metainfo") {
      if (body.json_schema_version !== undefined && body.json_schema_version !== 1) {
        throw new NftJsonError(`unsupported nft JSON schema version ${String(body.json_schema_version)}`);
      }
      continue;
    }
    const what = `nftables[${i}].${kind}`;
    const fam = str(body, "family", what);
    if (fam !== family) continue;
    if (kind === "table") continue;
    // Objects, chains and rules name their table in "table".
    if (body.table !== table) continue;
    switch (kind) {
      case "counter": {
        const c: NftCounter = { name: str(body, "name", what), packets: uint(body, "packets", what), bytes: uint(body, "bytes", what) };
        const comment = optStr(body, "comment", what);
        if (comment !== undefined) c.comment = comment;
        out.counters.set(c.name, c);
        break;
      }
      case "quota": {
        const inv = body.inv;
        if (inv !== undefined && typeof inv !== "boolean") throw new NftJsonError(`${what}: "inv" is not a boolean`);
        const q: NftQuota = {
          name: str(body, "name", what),
          limitBytes: uint(body, "bytes", what),
          // nft 1.0.6 prints "used" even when it is 0; older releases omitted it then.
          usedBytes: body.used === undefined ? 0 : uint(body, "used", what),
          over: inv === true,
        };
        const comment = optStr(body, "comment", what);
        if (comment !== undefined) q.comment = comment;
        out.quotas.set(q.name, q);
        break;
      }
      case "chain": {
        const c: NftChain = { name: str(body, "name", what), handle: uint(body, "handle", what), rules: [] };
        if (body.hook !== undefined) {
          c.hook = { type: str(body, "type", what), hook: str(body, "hook", what), prio: int(body, "prio", what), policy: str(body, "policy", what) };
        }
        out.chains.set(c.name, c);
        break;
      }
      case "rule": {
        if (!Array.isArray(body.expr)) throw new NftJsonError(`${what}: "expr" is not an array`);
        const r: NftRule = { chain: str(body, "chain", what), handle: uint(body, "handle", what), expr: body.expr };
        const comment = optStr(body, "comment", what);
        if (comment !== undefined) r.comment = comment;
        pendingRules.push(r);
        break;
      }
      default:
        // sets, maps, limits, flowtables...: not used by cvmd's tables.
        break;
    }
  }
  for (const r of pendingRules) {
    const chain = out.chains.get(r.chain);
    if (!chain) throw new NftJsonError(`rule ${r.handle} belongs to unknown chain ${r.chain}`);
    chain.rules.push(r);
  }
  return out;
}
