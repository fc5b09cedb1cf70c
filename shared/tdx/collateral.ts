/**
 * DCAP collateral: the JSON shape (field names of dcap-qvl's QuoteCollateralV3, as in the fixtures'
 * collateral.json), an offline bundle loader, a fetcher for an operator-configured PCCS or Intel PCS,
 * and a cache that keeps fetched collateral until the earliest nextUpdate it carries.
 *
 * Nothing here trusts what it fetched: every byte is verified by verify.ts against the pinned root.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { z } from "zod";

const text = (description: string) => z.string({ error: "must be a non-empty string" }).min(1, "must be a non-empty string").meta({ description });
const hexText = (description: string) => text(description).regex(/^(?:[0-9a-fA-F]{2})+$/, "must be hex");

/**
 * DCAP collateral, field names of dcap-qvl's QuoteCollateralV3 (as in the fixtures' collateral.json):
 * all nine fields non-empty strings, the hex ones hex; extra fields are dropped. Issues name the field
 * (`path`), with messages such as "must be hex".
 */
export const Collateral = z
  .object(
    {
      pck_crl_issuer_chain: text("PEM: the PCK CA that signed pck_crl, then the root CA."),
      root_ca_crl: hexText("Hex of the DER CRL signed by the root CA."),
      pck_crl: hexText("Hex of the DER CRL signed by the PCK (Platform or Processor) CA."),
      tcb_info_issuer_chain: text("PEM"),
      tcb_info: text("The tcbInfo JSON text exactly as Intel signed it."),
      tcb_info_signature: hexText("Hex, 64 bytes raw r‖s."),
      qe_identity_issuer_chain: text("PEM"),
      qe_identity: text("The enclaveIdentity JSON text exactly as signed."),
      qe_identity_signature: hexText("Hex, 64 bytes raw r‖s."),
    },
    { error: "must be a JSON object" },
  )
  .meta({ description: "Intel DCAP collateral, field names of dcap-qvl's QuoteCollateralV3 (as in collateral.json)." });
export type Collateral = z.infer<typeof Collateral>;

export const COLLATERAL_FIELDS = Object.keys(Collateral.shape) as (keyof Collateral)[];

/** Real bundles are ~20 KB; a cap keeps a hostile file from costing memory. */
const MAX_COLLATERAL_BYTES = 4 * 1024 * 1024;

export class CollateralError extends Error {
  override name = "CollateralError";
}

/** Validates the shape (all nine fields strings, hex fields hex); extra fields are ignored. */
export function parseCollateral(value: unknown): Collateral {
  const r = Collateral.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  throw new CollateralError(issue.path.length ? `collateral field ${String(issue.path[0])} ${issue.message}` : `collateral ${issue.message}`);
}

export function parseCollateralJson(text: string): Collateral {
  if (text.length > MAX_COLLATERAL_BYTES) throw new CollateralError("collateral file is too large");
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CollateralError(`collateral is not valid JSON: ${(e as Error).message}`);
  }
  return parseCollateral(v);
}

/** Loads an offline bundle (one JSON object as in the fixtures' collateral.json). */
export async function loadCollateralFile(path: string): Promise<Collateral> {
  return parseCollateralJson(await readFile(path, "utf8"));
}

/** SHA-256 over every field, each length-prefixed, in a fixed order: the identity of a bundle for caches. */
export function collateralDigest(c: Collateral): string {
  const h = createHash("sha256");
  const len = Buffer.alloc(4);
  for (const f of COLLATERAL_FIELDS) {
    const b = Buffer.from(c[f], "utf8");
    len.writeUInt32BE(b.length, 0);
    h.update(f).update(len).update(b);
  }
  return h.digest("hex");
}

/** Earliest nextUpdate among TCB info and QE identity (the CRLs' windows are checked during verification). */
export function collateralNextUpdate(c: Collateral): Date | undefined {
  let min: number | undefined;
  for (const text of [c.tcb_info, c.qe_identity]) {
    try {
      const t = Date.parse(String((JSON.parse(text) as { nextUpdate?: unknown }).nextUpdate));
      if (!Number.isNaN(t) && (min === undefined || t < min)) min = t;
    } catch {
      // unparseable collateral simply is not cached
    }
  }
  return min === undefined ? undefined : new Date(min);
}

export type PckCaType = "platform" | "processor";

/** Where collateral for one platform family comes from. */
export interface CollateralSource {
  get(fmspc: string, ca: PckCaType): Promise<Collateral>;
}

export type FetchFn = (url: string, init?: { signal?: AbortSignal; headers?: Record<string, string> }) => Promise<{
  ok: boolean;
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
  arrayBuffer(): Promise<ArrayBuffer>;
}>;

export interface PcsOptions {
  /** Defaults to globalThis.fetch; injected in tests so they never touch the network. */
  fetch?: FetchFn;
  timeoutMs?: number;
  /**
   * Where the root CA CRL lives. Intel PCS serves it from its certificate site
   * (https://certificates.trustedservices.intel.com/IntelSGXRootCA.der, the default for the PCS base
   * URL); a PCCS serves it at <base>/sgx/certification/v4/rootcacrl (the default otherwise).
   */
  rootCaCrlUrl?: string;
}

/** Intel's documented PCS base; operators normally point at their own PCCS instead. */
export const INTEL_PCS_BASE_URL = "https://api.trustedservices.intel.com";
export const INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/**
 * Returns the raw JSON text of the value of `key` in a top-level object, byte for byte as served: the
 * signature covers exactly that text, and JSON.parse + stringify would not reproduce it.
 */
export function extractRawJsonValue(body: string, key: string): string {
  const needle = JSON.stringify(key);
  let depth = 0;
  let i = 0;
  let inStr = false;
  for (; i < body.length; i++) {
    const ch = body[i]!;
    if (inStr) {
      if (ch === "\\") i++;
      else if (ch === '"') inStr = false;
      continue;
    }
    if (ch === "{" || ch === "[") depth++;
    else if (ch === "}" || ch === "]") depth--;
    else if (ch === '"') {
      if (depth === 1 && body.startsWith(needle, i)) {
        let j = i + needle.length;
        while (/\s/.test(body[j] ?? "")) j++;
        if (body[j] === ":") {
          j++;
          while (/\s/.test(body[j] ?? "")) j++;
          return body.slice(j, scanValueEnd(body, j));
        }
      }
      inStr = true;
    }
  }
  throw new CollateralError(`response has no top-level "${key}"`);
}

function scanValueEnd(s: string, start: number): number {
  const open = s[start];
  if (open !== "{") throw new CollateralError("expected a JSON object value");
  let depth = 0;
  let inStr = false;
  for (let i = start; i < s.length; i++) {
    const ch = s[i]!;
    if (inStr) {
      if (ch === "\\") i++;
      else if (ch === '"') inStr = false;
    } else if (ch === '"') inStr = true;
    else if (ch === "{" || ch === "[") depth++;
    else if (ch === "}" || ch === "]") {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  throw new CollateralError("unterminated JSON value");
}

function decodeChainHeader(v: string | null, name: string): string {
  if (!v) throw new CollateralError(`response lacks the ${name} header`);
  try {
    return decodeURIComponent(v);
  } catch {
    throw new CollateralError(`${name} header is not URL-encoded PEM`);
  }
}

/** Accepts DER, or hex / base64 text of DER (PCCS versions differ). */
function crlBytesToHex(bytes: Buffer, what: string): string {
  if (bytes[0] === 0x30) return bytes.toString("hex");
  const text = bytes.toString("latin1").trim();
  if (/^([0-9a-fA-F]{2})+$/.test(text)) return text.toLowerCase();
  if (/^[A-Za-z0-9+/=\s]+$/.test(text)) {
    const der = Buffer.from(text, "base64");
    if (der[0] === 0x30) return der.toString("hex");
  }
  throw new CollateralError(`${what} is neither DER, hex nor base64 DER`);
}

/** Fetches TDX collateral from a PCCS or Intel PCS (API v4 paths). */
export class PcsCollateralSource implements CollateralSource {
  readonly #base: string;
  readonly #fetch: FetchFn;
  readonly #timeoutMs: number;
  readonly #rootCrlUrl: string;

  constructor(baseUrl: string, opts: PcsOptions = {}) {
    const u = new URL(baseUrl);
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new CollateralError(`unsupported PCCS URL scheme ${u.protocol}`);
    this.#base = baseUrl.replace(/\/+$/, "");
    this.#fetch = opts.fetch ?? (globalThis.fetch as unknown as FetchFn);
    this.#timeoutMs = opts.timeoutMs ?? 15_000;
    this.#rootCrlUrl =
      opts.rootCaCrlUrl ?? (u.hostname === new URL(INTEL_PCS_BASE_URL).hostname ? INTEL_ROOT_CA_CRL_URL : `${this.#base}/sgx/certification/v4/rootcacrl`);
  }

  async #get(url: string) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), this.#timeoutMs);
    try {
      const res = await this.#fetch(url, { signal: ctl.signal });
      if (!res.ok) throw new CollateralError(`GET ${url} answered HTTP ${res.status}`);
      return res;
    } catch (e) {
      if (e instanceof CollateralError) throw e;
      throw new CollateralError(`GET ${url} failed: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  async get(fmspc: string, ca: PckCaType): Promise<Collateral> {
    if (!/^[0-9a-fA-F]{12}$/.test(fmspc)) throw new CollateralError(`FMSPC must be 6 bytes of hex, got "${fmspc}"`);
    const [tcb, qe, pckCrl, rootCrl] = await Promise.all([
      this.#get(`${this.#base}/tdx/certification/v4/tcb?fmspc=${fmspc.toUpperCase()}`),
      this.#get(`${this.#base}/tdx/certification/v4/qe/identity`),
      this.#get(`${this.#base}/sgx/certification/v4/pckcrl?ca=${ca}&encoding=der`),
      this.#get(this.#rootCrlUrl),
    ]);
    const tcbBody = await tcb.text();
    const qeBody = await qe.text();
    const tcbSig = (JSON.parse(tcbBody) as { signature?: unknown }).signature;
    const qeSig = (JSON.parse(qeBody) as { signature?: unknown }).signature;
    return parseCollateral({
      pck_crl_issuer_chain: decodeChainHeader(pckCrl.headers.get("SGX-PCK-CRL-Issuer-Chain"), "SGX-PCK-CRL-Issuer-Chain"),
      root_ca_crl: crlBytesToHex(Buffer.from(await rootCrl.arrayBuffer()), "root CA CRL"),
      pck_crl: crlBytesToHex(Buffer.from(await pckCrl.arrayBuffer()), "PCK CRL"),
      tcb_info_issuer_chain: decodeChainHeader(
        tcb.headers.get("TCB-Info-Issuer-Chain") ?? tcb.headers.get("SGX-TCB-Info-Issuer-Chain"),
        "TCB-Info-Issuer-Chain",
      ),
      tcb_info: extractRawJsonValue(tcbBody, "tcbInfo"),
      tcb_info_signature: tcbSig,
      qe_identity_issuer_chain: decodeChainHeader(
        qe.headers.get("SGX-Enclave-Identity-Issuer-Chain"),
        "SGX-Enclave-Identity-Issuer-Chain",
      ),
      qe_identity: extractRawJsonValue(qeBody, "enclaveIdentity"),
      qe_identity_signature: qeSig,
    });
  }
}

/**
 * Keeps collateral per (FMSPC, CA) until the earliest nextUpdate of its TCB info / QE identity (minus
 * a margin), so a host verifying many guests asks its PCCS once per platform family per period.
 */
export class CachingCollateralSource implements CollateralSource {
  readonly #inner: CollateralSource;
  readonly #now: () => number;
  readonly #marginMs: number;
  readonly #entries = new Map<string, { collateral: Collateral; digest: string; expiresAt: number }>();
  readonly #maxEntries: number;

  constructor(inner: CollateralSource, opts: { now?: () => number; marginMs?: number; maxEntries?: number } = {}) {
    this.#inner = inner;
    this.#now = opts.now ?? Date.now;
    this.#marginMs = opts.marginMs ?? 60_000;
    this.#maxEntries = opts.maxEntries ?? 256;
  }

  async get(fmspc: string, ca: PckCaType): Promise<Collateral> {
    const key = `${fmspc.toLowerCase()}/${ca}`;
    const hit = this.#entries.get(key);
    if (hit && hit.expiresAt > this.#now()) return hit.collateral;
    this.#entries.delete(key);
    const collateral = await this.#inner.get(fmspc, ca);
    const next = collateralNextUpdate(collateral);
    if (next && next.getTime() - this.#marginMs > this.#now()) {
      if (this.#entries.size >= this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
      this.#entries.set(key, { collateral, digest: collateralDigest(collateral), expiresAt: next.getTime() - this.#marginMs });
    }
    return collateral;
  }

  /** Digest of the cached bundle for (fmspc, ca), if any and fresh. */
  digestOf(fmspc: string, ca: PckCaType): string | undefined {
    const hit = this.#entries.get(`${fmspc.toLowerCase()}/${ca}`);
    return hit && hit.expiresAt > this.#now() ? hit.digest : undefined;
  }
}
