/**
 * DCAP verification of a TDX quote against collateral, at a given time, to the pinned Intel SGX Root CA.
 *
 *   collateral: root CA CRL (signed by the root, in its window) → TCB signing chain → TCB info and QE
 *               identity signatures (raw r||s over the exact stored text) and windows → PCK CRL issuer
 *               chain → PCK CRL (signed by that CA, in its window); CA certificates checked against the
 *               root CA CRL
 *   quote:      PCK chain from the quote → root, leaf checked against the PCK CRL of its own CA → QE
 *               report signed by the PCK key → QE report data = SHA-256(attestation key || QE auth data)
 *               followed by zeros → QE report against the QE identity → quote signed by the attestation
 *               key → FMSPC match → TCB level (SGX components + PCESVN from the PCK certificate,
 *               TEE_TCB_SVN) + TDX module identity + QE status, converged → TD attributes policy
 *
 * Nothing throws out of verifyQuote: every failure is a verdict with ok=false and a reason.
 *
 * Warm path: a VerificationCache remembers verified collateral (by digest), verified PCK chains (by
 * digest, per collateral) and verified QE reports (by digest, per PCK leaf), each with the time window
 * in which its checks hold; inside that window a repeat costs only the quote's own ECDSA check.
 */
import { createHash, createPublicKey, type KeyObject } from "node:crypto";
import { z } from "zod";
import { collateralDigest, type Collateral } from "./collateral.js";
import {
  PkiError,
  checkNotRevoked,
  intelRootCa,
  parseCertificate,
  parseCrl,
  parseSgxExtension,
  splitPemChain,
  verifyChain,
  verifyCrl,
  verifyRawSignature,
  type Certificate,
  type Crl,
  type SgxExtension,
} from "./pck.js";
import { INTEL_QE_VENDOR_ID, NotTdxQuoteError, QuoteFormatError, parseQuote, type TdReport, type TdxQuote } from "./quote.js";
import {
  TCB_STATUSES,
  TcbError,
  convergeStatus,
  evaluateQeIdentity,
  evaluateTdxModule,
  matchTcbLevel,
  mergeAdvisories,
  parseQeIdentity,
  parseTcbInfo,
  type QeIdentity,
  type TcbInfo,
  type TcbMatching,
  type TcbStatus,
} from "./tcb.js";

export const VERIFY_STAGES = ["parse", "collateral", "pck_chain", "qe_report", "quote_signature", "tcb", "policy", "internal"] as const;
export type VerifyStage = (typeof VERIFY_STAGES)[number];

// The shapes a verdict reports, each one zod schema with its type inferred: the host's API serves
// them (shared/api/schemas.ts builds its OpenAPI document from these), cvm-verify prints them.
const hexField = () => z.string().regex(/^[0-9a-f]*$/);

/** Fields of the TD report, lowercase hex. */
export const Measurements = z.object({
  mrtd: hexField(),
  rtmr0: hexField(),
  rtmr1: hexField(),
  rtmr2: hexField(),
  rtmr3: hexField(),
  mr_config_id: hexField(),
  mr_owner: hexField(),
  mr_owner_config: hexField(),
  report_data: hexField(),
  td_attributes: hexField(),
  xfam: hexField(),
  tee_tcb_svn: hexField(),
  mr_seam: hexField(),
  mr_signer_seam: hexField(),
  seam_attributes: hexField(),
  tee_tcb_svn2: hexField().optional().meta({ description: "TD report 1.5 only." }),
  mr_servicetd: hexField().optional().meta({ description: "TD report 1.5 only." }),
});
export type Measurements = z.infer<typeof Measurements>;

/** Header facts of a parsed quote. */
export const QuoteFacts = z.object({
  version: z.int(),
  body_type: z.int(),
  report_type: z.enum(["td10", "td15"]),
  size: z.int(),
  signed_length: z.int(),
  trailing_bytes: z.int(),
  qe_vendor_id: z.string(),
  user_data: z.string(),
});
export type QuoteFacts = z.infer<typeof QuoteFacts>;

/** The TCB evaluation behind a status. */
export const TcbFacts = z.object({
  platform_status: z.enum(TCB_STATUSES),
  tdx_module_status: z.enum(TCB_STATUSES).nullable(),
  qe_status: z.enum(TCB_STATUSES),
  tcb_date: z.string(),
  tcb_evaluation_data_number: z.int(),
});
export type TcbFacts = z.infer<typeof TcbFacts>;

/** The PCK leaf certificate of the quote. */
export const PckFacts = z.object({
  subject: z.string(),
  issuer: z.string(),
  serial: z.string(),
  ca_type: z.enum(["platform", "processor", "unknown"]),
  cpu_svn: z.string(),
  pce_svn: z.int(),
  sgx_tcb_components: z.array(z.int()),
});
export type PckFacts = z.infer<typeof PckFacts>;

export interface Verdict {
  /** True only when every check passed and the TCB status is not Revoked. */
  ok: boolean;
  status: TcbStatus | null;
  advisory_ids: string[];
  reason?: string;
  failure?: { stage: VerifyStage; code: string };
  /** Present whenever the quote parsed (also on failure, for diagnostics; trust them only when ok). */
  measurements: Measurements | null;
  fmspc: string | null;
  quote: QuoteFacts | null;
  tcb?: TcbFacts;
  pck?: PckFacts;
  /** The verification time (ISO 8601). */
  at: string;
}

export interface VerifyOptions {
  /** Verification time: Date, or Unix seconds. */
  at: Date | number;
  /** DER of the trust anchor. Defaults to the embedded Intel SGX Root CA; only tests pass another. */
  rootCaDer?: Uint8Array;
  cache?: VerificationCache;
  tcbMatching?: TcbMatching;
  /** Accept TDs whose attributes say DEBUG (never in production). Default false. */
  allowDebug?: boolean;
}

class Failure extends Error {
  constructor(
    readonly stage: VerifyStage,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function fail(stage: VerifyStage, e: unknown, prefix?: string): Failure {
  if (e instanceof Failure) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const code = e instanceof PkiError || e instanceof TcbError ? e.code : e instanceof QuoteFormatError ? "malformed_quote" : e instanceof NotTdxQuoteError ? "not_tdx" : "error";
  return new Failure(stage, code, prefix ? `${prefix}: ${msg}` : msg);
}

interface Window {
  notBefore: number;
  notAfter: number;
}

function narrow(w: Window, from: Date, to: Date): void {
  if (from.getTime() > w.notBefore) w.notBefore = from.getTime();
  if (to.getTime() < w.notAfter) w.notAfter = to.getTime();
}

interface VerifiedCollateral extends Window {
  tcbInfo: TcbInfo;
  qeIdentity: QeIdentity;
  rootCrl: Crl;
  pckCrl: Crl;
  pckCrlIssuer: Certificate;
}

interface VerifiedPck extends Window {
  leaf: Certificate;
  sgx: SgxExtension;
}

/** Bounded map whose entries hold only inside their validity window. */
class WindowedMap<T extends Window> {
  readonly #m = new Map<string, T>();
  constructor(readonly max: number) {}
  get(key: string, at: number): T | undefined {
    const v = this.#m.get(key);
    if (!v) return undefined;
    if (at < v.notBefore || at > v.notAfter) return undefined;
    return v;
  }
  set(key: string, v: T): void {
    if (this.#m.size >= this.max && !this.#m.has(key)) this.#m.delete(this.#m.keys().next().value!);
    this.#m.set(key, v);
  }
  get size(): number {
    return this.#m.size;
  }
  clear(): void {
    this.#m.clear();
  }
}

/** Warm-path memory for one verifier (host). Only successful checks are remembered. */
export class VerificationCache {
  readonly collateral: WindowedMap<VerifiedCollateral>;
  readonly pck: WindowedMap<VerifiedPck>;
  readonly qeReports: WindowedMap<Window>;
  readonly #digests = new WeakMap<Collateral, string>();

  constructor(opts: { maxEntries?: number } = {}) {
    const max = opts.maxEntries ?? 1024;
    this.collateral = new WindowedMap(max);
    this.pck = new WindowedMap(max);
    this.qeReports = new WindowedMap(max);
  }

  digestOf(c: Collateral): string {
    let d = this.#digests.get(c);
    if (!d) {
      d = collateralDigest(c);
      this.#digests.set(c, d);
    }
    return d;
  }

  clear(): void {
    this.collateral.clear();
    this.pck.clear();
    this.qeReports.clear();
  }
}

const sha256 = (...parts: Buffer[]) => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest();
};

/** Parses every certificate of a chain, reusing identical ones within this call (roots repeat). */
function chainOf(pem: string | Buffer, what: string, strict: boolean, seen: Map<string, Certificate>): Certificate[] {
  return splitPemChain(pem, what, strict).map((der, i) => {
    const key = der.toString("base64");
    let c = seen.get(key);
    if (!c) {
      c = parseCertificate(der, `${what}[${i}]`);
      seen.set(key, c);
    }
    return c;
  });
}

function verifyCollateral(c: Collateral, root: Certificate, at: Date, seen: Map<string, Certificate>): VerifiedCollateral {
  const w: Window = { notBefore: -Infinity, notAfter: Infinity };
  const rootCrl = parseCrl(Buffer.from(c.root_ca_crl, "hex"), "root CA CRL");
  verifyCrl(rootCrl, root, at, "root CA CRL");
  narrow(w, rootCrl.thisUpdate, rootCrl.nextUpdate!);

  const signed = (
    chainPem: string,
    text: string,
    sigHex: string,
    what: string,
  ): void => {
    const chain = verifyChain(chainOf(chainPem, `${what} issuer chain`, false, seen), root, at, `${what} issuer chain`);
    narrow(w, chain.notBefore, chain.notAfter);
    for (const cert of chain.certs.slice(0, -1)) if (cert.issuerDer.equals(root.subjectDer)) checkNotRevoked(cert, rootCrl, `${what} issuer chain`);
    if (!verifyRawSignature(Buffer.from(text, "utf8"), Buffer.from(sigHex, "hex"), chain.certs[0]!.publicKey)) {
      throw new Failure("collateral", "bad_signature", `${what} signature does not verify under "${chain.certs[0]!.subject}"`);
    }
  };

  signed(c.tcb_info_issuer_chain, c.tcb_info, c.tcb_info_signature, "TCB info");
  const tcbInfo = parseTcbInfo(c.tcb_info);
  if (at < tcbInfo.issueDate) throw new Failure("collateral", "not_yet_valid", `TCB info issue date ${tcbInfo.issueDate.toISOString()} is after ${at.toISOString()}`);
  if (at > tcbInfo.nextUpdate) throw new Failure("collateral", "expired", `TCB info expired at its nextUpdate ${tcbInfo.nextUpdate.toISOString()} (checked at ${at.toISOString()})`);
  narrow(w, tcbInfo.issueDate, tcbInfo.nextUpdate);

  signed(c.qe_identity_issuer_chain, c.qe_identity, c.qe_identity_signature, "QE identity");
  const qeIdentity = parseQeIdentity(c.qe_identity);
  if (at < qeIdentity.issueDate) throw new Failure("collateral", "not_yet_valid", `QE identity issue date ${qeIdentity.issueDate.toISOString()} is after ${at.toISOString()}`);
  if (at > qeIdentity.nextUpdate) throw new Failure("collateral", "expired", `QE identity expired at its nextUpdate ${qeIdentity.nextUpdate.toISOString()} (checked at ${at.toISOString()})`);
  narrow(w, qeIdentity.issueDate, qeIdentity.nextUpdate);

  const crlChain = verifyChain(
    chainOf(c.pck_crl_issuer_chain, "PCK CRL issuer chain", false, seen),
    root,
    at,
    "PCK CRL issuer chain",
    { leafIsCa: true },
  );
  narrow(w, crlChain.notBefore, crlChain.notAfter);
  const crlIssuer = crlChain.certs[0]!;
  for (const cert of crlChain.certs.slice(0, -1)) if (cert.issuerDer.equals(root.subjectDer)) checkNotRevoked(cert, rootCrl, "PCK CRL issuer chain");
  const pckCrl = parseCrl(Buffer.from(c.pck_crl, "hex"), "PCK CRL");
  verifyCrl(pckCrl, crlIssuer, at, "PCK CRL");
  narrow(w, pckCrl.thisUpdate, pckCrl.nextUpdate!);
  return { ...w, tcbInfo, qeIdentity, rootCrl, pckCrl, pckCrlIssuer: crlIssuer };
}

function verifyPck(q: TdxQuote, vc: VerifiedCollateral, root: Certificate, at: Date, seen: Map<string, Certificate>): VerifiedPck {
  const chain = verifyChain(chainOf(q.pckChainRaw, "PCK certificate chain", true, seen), root, at, "PCK certificate chain");
  const leaf = chain.certs[0]!;
  const w: Window = { notBefore: chain.notBefore.getTime(), notAfter: chain.notAfter.getTime() };
  narrow(w, new Date(vc.notBefore), new Date(vc.notAfter));
  for (const cert of chain.certs.slice(1, -1)) checkNotRevoked(cert, vc.rootCrl, "PCK certificate chain");
  // The PCK CRL must come from the CA that issued this leaf, or it says nothing about it.
  const leafCa = chain.certs[1]!;
  if (!leaf.issuerDer.equals(vc.pckCrl.issuerDer) || !leafCa.spki.equals(vc.pckCrlIssuer.spki)) {
    throw new Failure(
      "pck_chain",
      "crl_mismatch",
      `PCK CRL is issued by "${vc.pckCrlIssuer.subject}" but the PCK certificate by "${leaf.issuer}": collateral for the wrong PCK CA`,
    );
  }
  checkNotRevoked(leaf, vc.pckCrl, "PCK certificate");
  if (!leaf.sgxExtension) throw new Failure("pck_chain", "bad_extension", "PCK certificate lacks the Intel SGX extension");
  return { ...w, leaf, sgx: parseSgxExtension(leaf.sgxExtension) };
}

const P256_SPKI_PREFIX = Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex");

function attestationKeyOf(raw: Buffer): KeyObject {
  try {
    return createPublicKey({ key: Buffer.concat([P256_SPKI_PREFIX, Buffer.from([4]), raw]), format: "der", type: "spki" });
  } catch (e) {
    throw new Failure("qe_report", "bad_attestation_key", `attestation key is not a P-256 point: ${(e as Error).message}`);
  }
}

const hex = (b: Buffer) => b.toString("hex");

export function measurementsOf(r: TdReport): Measurements {
  const m: Measurements = {
    mrtd: hex(r.mrTd),
    rtmr0: hex(r.rtmr[0]),
    rtmr1: hex(r.rtmr[1]),
    rtmr2: hex(r.rtmr[2]),
    rtmr3: hex(r.rtmr[3]),
    mr_config_id: hex(r.mrConfigId),
    mr_owner: hex(r.mrOwner),
    mr_owner_config: hex(r.mrOwnerConfig),
    report_data: hex(r.reportData),
    td_attributes: hex(r.tdAttributes),
    xfam: hex(r.xfam),
    tee_tcb_svn: hex(r.teeTcbSvn),
    mr_seam: hex(r.mrSeam),
    mr_signer_seam: hex(r.mrSignerSeam),
    seam_attributes: hex(r.seamAttributes),
  };
  if (r.teeTcbSvn2) m.tee_tcb_svn2 = hex(r.teeTcbSvn2);
  if (r.mrServiceTd) m.mr_servicetd = hex(r.mrServiceTd);
  return m;
}

/**
 * TD attributes policy (same rules as dcap-qvl): no DEBUG (TUD byte), no reserved SEC/OTHER bits,
 * SEPT_VE_DISABLE set; a TD 1.5 report must not name a service TD.
 */
export function tdAttributesProblem(r: TdReport, allowDebug: boolean): string | undefined {
  const a = r.tdAttributes;
  if (a[0] !== 0 && !allowDebug) return `TD is in debug mode (TD attributes ${hex(a)})`;
  const secReserved = a[1]! | a[2]! | (a[3]! & 0x0f) | (a[3]! & 0x20);
  const otherReserved = a[4]! | a[5]! | a[6]! | (a[7]! & 0x7f);
  if (secReserved !== 0 || otherReserved !== 0) return `reserved bits are set in TD attributes ${hex(a)}`;
  if ((a[3]! & 0x10) === 0) return `SEPT_VE_DISABLE is not set in TD attributes ${hex(a)}`;
  if (r.mrServiceTd && r.mrServiceTd.some((b) => b !== 0)) return "TD report names a service TD (MRSERVICETD is not zero)";
  return undefined;
}

function caTypeOf(issuer: string): "platform" | "processor" | "unknown" {
  if (/PCK Platform CA/i.test(issuer)) return "platform";
  if (/PCK Processor CA/i.test(issuer)) return "processor";
  return "unknown";
}

function toDate(at: Date | number): Date {
  return at instanceof Date ? new Date(at.getTime()) : new Date(at * 1000);
}

/** Verifies synchronously (all crypto is node:crypto); see verifyQuote for the contract. */
export function verifyQuoteSync(quoteBytes: Uint8Array, collateral: Collateral, opts: VerifyOptions): Verdict {
  const at = toDate(opts.at);
  const verdict: Verdict = {
    ok: false,
    status: null,
    advisory_ids: [],
    measurements: null,
    fmspc: null,
    quote: null,
    at: Number.isNaN(at.getTime()) ? "invalid" : at.toISOString(),
  };
  try {
    if (Number.isNaN(at.getTime())) throw new Failure("parse", "bad_time", "verification time is not a valid date");
    let q: TdxQuote;
    try {
      q = parseQuote(quoteBytes);
    } catch (e) {
      throw fail("parse", e);
    }
    verdict.measurements = measurementsOf(q.report);
    verdict.quote = {
      version: q.header.version,
      body_type: q.bodyType,
      report_type: q.report.kind,
      size: quoteBytes.length,
      signed_length: q.layout.signedLength,
      trailing_bytes: q.layout.trailingBytes,
      qe_vendor_id: hex(q.header.qeVendorId),
      user_data: hex(q.header.userData),
    };

    if (verdict.quote.qe_vendor_id !== INTEL_QE_VENDOR_ID) {
      throw new Failure("parse", "unsupported_qe_vendor", `QE vendor ID ${verdict.quote.qe_vendor_id} is not Intel's (${INTEL_QE_VENDOR_ID})`);
    }

    const seen = new Map<string, Certificate>();
    let root: Certificate;
    try {
      root = opts.rootCaDer ? parseCertificate(opts.rootCaDer, "trust anchor") : intelRootCa();
    } catch (e) {
      throw fail("internal", e, "trust anchor");
    }
    const cache = opts.cache;
    const now = at.getTime();

    let cdigest = "";
    let vc: VerifiedCollateral | undefined;
    if (cache) {
      cdigest = `${root.sha256}:${cache.digestOf(collateral)}`;
      vc = cache.collateral.get(cdigest, now);
    }
    if (!vc) {
      try {
        vc = verifyCollateral(collateral, root, at, seen);
      } catch (e) {
        throw fail("collateral", e, "collateral");
      }
      cache?.collateral.set(cdigest, vc);
    }

    let pck: VerifiedPck | undefined;
    const pckKey = cache ? `${cdigest}:${sha256(q.pckChainRaw).toString("hex")}` : "";
    if (cache) pck = cache.pck.get(pckKey, now);
    if (!pck) {
      try {
        pck = verifyPck(q, vc, root, at, seen);
      } catch (e) {
        throw fail("pck_chain", e);
      }
      cache?.pck.set(pckKey, pck);
    }
    const { leaf, sgx } = pck;
    verdict.fmspc = hex(sgx.fmspc);
    verdict.pck = {
      subject: leaf.subject,
      issuer: leaf.issuer,
      serial: leaf.serialHex,
      ca_type: caTypeOf(leaf.issuer),
      cpu_svn: hex(sgx.cpuSvn),
      pce_svn: sgx.pceSvn,
      sgx_tcb_components: sgx.sgxTcbComponents,
    };

    // QE report: signed by the PCK key; its report data binds the attestation key and QE auth data.
    const qeKey = cache ? `${leaf.sha256}:${sha256(q.qeReportRaw, q.qeReportSignature).toString("hex")}` : "";
    if (!(cache && cache.qeReports.get(qeKey, now))) {
      if (!verifyRawSignature(q.qeReportRaw, q.qeReportSignature, leaf.publicKey)) {
        throw new Failure("qe_report", "bad_signature", "QE report signature does not verify under the PCK certificate key");
      }
      cache?.qeReports.set(qeKey, { notBefore: pck.notBefore, notAfter: pck.notAfter });
    }
    const expected = Buffer.concat([sha256(q.attestationKey, q.qeAuthData), Buffer.alloc(32)]);
    if (!expected.equals(q.qeReport.reportData)) {
      throw new Failure(
        "qe_report",
        "binding_mismatch",
        "QE report data is not SHA-256(attestation key || QE auth data): the attestation key is not the one the QE vouched for",
      );
    }
    let qeResult;
    try {
      if (vc.qeIdentity.id !== "TD_QE" || vc.qeIdentity.version < 2) {
        throw new TcbError("bad_collateral", `QE identity is "${vc.qeIdentity.id}" v${vc.qeIdentity.version}; a TDX quote needs "TD_QE" v2+`);
      }
      qeResult = evaluateQeIdentity(q.qeReport, vc.qeIdentity);
    } catch (e) {
      throw fail("qe_report", e);
    }

    if (!verifyRawSignature(q.signedData, q.signature, attestationKeyOf(q.attestationKey))) {
      throw new Failure("quote_signature", "bad_signature", "quote signature does not verify under the attestation key");
    }

    // TCB: platform level from the PCK certificate's SVNs and TEE_TCB_SVN, then module and QE.
    const info = vc.tcbInfo;
    try {
      if (info.id !== "TDX" || info.version < 3) throw new TcbError("bad_collateral", `TCB info is "${info.id}" v${info.version}; a TDX quote needs TDX v3`);
      if (info.fmspc !== hex(sgx.fmspc)) {
        throw new TcbError("fmspc_mismatch", `TCB info is for FMSPC ${info.fmspc}, the PCK certificate says ${hex(sgx.fmspc)}`);
      }
      if (info.pceId !== hex(sgx.pceId)) {
        throw new TcbError("fmspc_mismatch", `TCB info is for PCE ID ${info.pceId}, the PCK certificate says ${hex(sgx.pceId)}`);
      }
      const level = matchTcbLevel(
        info,
        { sgxComponents: sgx.sgxTcbComponents, pceSvn: sgx.pceSvn, teeTcbSvn: q.report.teeTcbSvn },
        opts.tcbMatching ?? "strict",
      );
      const mod = evaluateTdxModule(info, q.report);
      const components = [qeResult.status, ...(mod ? [mod.status] : [])];
      const status = convergeStatus(level.status, components);
      verdict.tcb = {
        platform_status: level.status,
        tdx_module_status: mod?.status ?? null,
        qe_status: qeResult.status,
        tcb_date: level.tcbDate,
        tcb_evaluation_data_number: info.tcbEvaluationDataNumber,
      };
      verdict.status = status;
      verdict.advisory_ids = mergeAdvisories(level.advisoryIds, qeResult.advisoryIds, mod?.advisoryIds ?? []);
      if (status === "Revoked") throw new Failure("tcb", "revoked", "TCB status is Revoked");
    } catch (e) {
      throw fail("tcb", e);
    }

    const problem = tdAttributesProblem(q.report, opts.allowDebug ?? false);
    if (problem) throw new Failure("policy", "td_attributes", problem);

    verdict.ok = true;
    return verdict;
  } catch (e) {
    const f = e instanceof Failure ? e : fail("internal", e, "unexpected error");
    verdict.ok = false;
    // A Revoked TCB is a known status worth showing; any other failure has no trustworthy status.
    if (f.code !== "revoked") {
      verdict.status = null;
      verdict.advisory_ids = [];
    }
    verdict.reason = f.message;
    verdict.failure = { stage: f.stage, code: f.code };
    return verdict;
  }
}

/**
 * Verifies a TDX quote (raw bytes, possibly zero-padded) against collateral at opts.at. Never throws.
 * Async so a WebCrypto-only backend can replace node:crypto without changing callers.
 */
export async function verifyQuote(quote: Uint8Array, collateral: Collateral, opts: VerifyOptions): Promise<Verdict> {
  return verifyQuoteSync(quote, collateral, opts);
}

/** A verifier bound to one cache and policy: what a host that checks many guests keeps around. */
export class QuoteVerifier {
  readonly cache: VerificationCache;
  constructor(private readonly defaults: Omit<VerifyOptions, "at" | "cache"> & { cache?: VerificationCache } = {}) {
    this.cache = defaults.cache ?? new VerificationCache();
  }
  verify(quote: Uint8Array, collateral: Collateral, at: Date | number): Promise<Verdict> {
    return verifyQuote(quote, collateral, { ...this.defaults, at, cache: this.cache });
  }
  verifySync(quote: Uint8Array, collateral: Collateral, at: Date | number): Verdict {
    return verifyQuoteSync(quote, collateral, { ...this.defaults, at, cache: this.cache });
  }
}
