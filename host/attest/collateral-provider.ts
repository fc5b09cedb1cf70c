import { readFile, stat } from "node:fs/promises";
import type { Logger } from "pino";
import {
  CachingCollateralSource,
  CollateralError,
  parseCollateral,
  PcsCollateralSource,
  type Collateral,
  type CollateralSource,
  type FetchFn,
  type PckInfo,
} from "../../shared/tdx/index.js";
import type { CollateralOrigin } from "../../shared/api/schemas.js";

/** Where a verification's collateral came from, as verdicts report it (shared/api/schemas.ts). */
export type { CollateralOrigin };

export type CollateralLookup = { collateral: Collateral; source: CollateralOrigin } | { collateral: null; reason: string };

/** Picks the collateral that can verify a quote from the platform family its PCK certificate names. */
export interface CollateralProvider {
  readonly configured: boolean;
  collateralFor(pck: PckInfo): Promise<CollateralLookup>;
}

export const NO_COLLATERAL_SOURCE = "no collateral source configured (CVM_COLLATERAL_FILE or CVM_PCCS_URL)";

const FMSPC = /^[0-9a-f]{12}$/;

/** FMSPC a bundle's TCB info is for (lowercase hex): what the bundle can verify. */
function fmspcOfBundle(c: Collateral, what: string): string {
  let fmspc: unknown;
  try {
    fmspc = (JSON.parse(c.tcb_info) as { fmspc?: unknown }).fmspc;
  } catch (e) {
    throw new CollateralError(`${what}: tcb_info is not JSON (${(e as Error).message})`);
  }
  if (typeof fmspc !== "string" || !FMSPC.test(fmspc.toLowerCase())) throw new CollateralError(`${what}: tcb_info has no 6-byte hex fmspc`);
  return fmspc.toLowerCase();
}

/**
 * An offline bundle: one collateral.json-shaped object, or an object mapping FMSPC (hex) to such
 * objects when the host serves several platform families. Bundles are indexed by the FMSPC their own
 * TCB info names, so a key that disagrees with its bundle is refused rather than trusted.
 */
export function parseCollateralBundle(text: string): Map<string, Collateral> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new CollateralError(`not valid JSON: ${(e as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new CollateralError("must be a JSON object");
  const out = new Map<string, Collateral>();
  if ("tcb_info" in value) {
    const c = parseCollateral(value);
    out.set(fmspcOfBundle(c, "collateral"), c);
    return out;
  }
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length === 0) throw new CollateralError("holds no collateral");
  for (const [key, v] of entries) {
    if (!FMSPC.test(key.toLowerCase())) throw new CollateralError(`key "${key.slice(0, 40)}" is not an FMSPC (12 hex digits)`);
    let c: Collateral;
    try {
      c = parseCollateral(v);
    } catch (e) {
      throw new CollateralError(`${key}: ${(e as Error).message}`);
    }
    const fmspc = fmspcOfBundle(c, key);
    if (fmspc !== key.toLowerCase()) throw new CollateralError(`key ${key} holds collateral for FMSPC ${fmspc}`);
    out.set(fmspc, c);
  }
  return out;
}

/**
 * CVM_COLLATERAL_FILE, read at start (a bad file stops cvmd) and again whenever its size or mtime
 * changes, so an operator refreshes collateral by replacing the file. A replacement that does not
 * parse is logged and the previous bundle stays in use.
 */
export class CollateralBundleFile {
  private bundles = new Map<string, Collateral>();
  private version = "";

  constructor(
    readonly path: string,
    private readonly logger?: Logger,
  ) {}

  async load(): Promise<void> {
    const s = await stat(this.path).catch((e: Error) => {
      throw new CollateralError(`CVM_COLLATERAL_FILE=${this.path}: ${e.message}`);
    });
    await this.read(`${s.size}:${s.mtimeMs}`);
  }

  async get(fmspc: string): Promise<Collateral | undefined> {
    const s = await stat(this.path).catch(() => null);
    const version = s ? `${s.size}:${s.mtimeMs}` : this.version;
    if (version !== this.version) {
      await this.read(version).catch((err: Error) => {
        // Remember the version so one bad file is logged once, not on every request.
        this.version = version;
        this.logger?.warn({ err: err.message, path: this.path }, "collateral file changed but does not parse; keeping the previous bundle");
      });
    }
    return this.bundles.get(fmspc.toLowerCase());
  }

  get fmspcs(): string[] {
    return [...this.bundles.keys()];
  }

  private async read(version: string): Promise<void> {
    const text = await readFile(this.path, "utf8");
    try {
      this.bundles = parseCollateralBundle(text);
    } catch (e) {
      throw new CollateralError(`CVM_COLLATERAL_FILE=${this.path}: ${(e as Error).message}`);
    }
    this.version = version;
  }
}

/** The offline bundle first (the operator pinned it), then the PCCS. */
export class ConfiguredCollateralProvider implements CollateralProvider {
  constructor(private readonly o: { file?: CollateralBundleFile; pccs?: CollateralSource }) {}

  get configured(): boolean {
    return Boolean(this.o.file || this.o.pccs);
  }

  async collateralFor(pck: PckInfo): Promise<CollateralLookup> {
    if (!this.configured) return { collateral: null, reason: NO_COLLATERAL_SOURCE };
    const reasons: string[] = [];
    if (this.o.file) {
      const c = await this.o.file.get(pck.fmspc);
      if (c) return { collateral: c, source: "file" };
      reasons.push(`CVM_COLLATERAL_FILE has no collateral for FMSPC ${pck.fmspc} (it covers ${this.o.file.fmspcs.join(", ") || "none"})`);
    }
    if (this.o.pccs) {
      try {
        return { collateral: await this.o.pccs.get(pck.fmspc, pck.ca), source: "pccs" };
      } catch (e) {
        reasons.push(`collateral for FMSPC ${pck.fmspc} (${pck.ca} CA) is unavailable from CVM_PCCS_URL: ${(e as Error).message}`);
      }
    }
    return { collateral: null, reason: reasons.join("; ") };
  }
}

/** Builds the provider from configuration; loads (and so checks) the offline bundle now. */
export async function buildCollateralProvider(
  cfg: { collateralFile: string | null; pccsUrl: string | null },
  opts: { now: () => number; logger?: Logger; fetch?: FetchFn },
): Promise<ConfiguredCollateralProvider> {
  let file: CollateralBundleFile | undefined;
  if (cfg.collateralFile) {
    file = new CollateralBundleFile(cfg.collateralFile, opts.logger);
    await file.load();
  }
  const pccs = cfg.pccsUrl ? new CachingCollateralSource(new PcsCollateralSource(cfg.pccsUrl, { fetch: opts.fetch }), { now: opts.now }) : undefined;
  return new ConfiguredCollateralProvider({ file, pccs });
}
