/**
 * TDX quote parser (versions 4 and 5; TD report 1.0 and 1.5 bodies). Layout per Intel's "TDX DCAP
 * Quoting Library API", appendix "Quote format". All integers are little-endian.
 *
 *   header (48) | [v5: body type u16, body size u32] | TD report (584 or 648)   <- signed by the attestation key
 *   auth data size u32 | signature (64) | attestation key (64) | certification data (type 6:
 *     QE report (384) | QE report signature (64) | QE auth data (u16 + n) | certification data (type 5: PEM chain))
 *
 * Every nested size must exactly fill its container. Bytes after the declared auth data are tolerated
 * (configfs-tsm and cloud providers hand out zero-padded buffers) but are only reported, never read:
 * every signed region is cut by declared offsets, so trailing bytes cannot reach one.
 */

export const TEE_TYPE_TDX = 0x81;
export const TEE_TYPE_SGX = 0x00;
export const ATTESTATION_KEY_ECDSA_P256 = 2;
export const INTEL_QE_VENDOR_ID = "939a7233f79c4ca9940a0db3957f0607";

const HEADER_LEN = 48;
const TD10_LEN = 584;
const TD15_LEN = 648;
const ENCLAVE_REPORT_LEN = 384;
const BODY_DESCRIPTOR_LEN = 6;
/** Real quotes are ~5 KB, padded to 8000 by some providers; anything this large is not a quote. */
export const MAX_QUOTE_BYTES = 64 * 1024;

export class QuoteFormatError extends Error {
  override name = "QuoteFormatError";
  constructor(
    readonly field: string,
    readonly offset: number,
    detail: string,
  ) {
    super(`quote ${field} at offset ${offset}: ${detail}`);
  }
}

/** A well-formed quote that is not a TDX quote (e.g. SGX v3); callers show this reason verbatim. */
export class NotTdxQuoteError extends Error {
  override name = "NotTdxQuoteError";
}

export interface QuoteHeader {
  version: number;
  attestationKeyType: number;
  teeType: number;
  /** Reserved in v4/v5 TDX headers (QE/PCE SVN in v3); kept for parity with other parsers. */
  qeSvn: number;
  pceSvn: number;
  qeVendorId: Buffer;
  userData: Buffer;
}

export interface TdReport {
  kind: "td10" | "td15";
  teeTcbSvn: Buffer;
  mrSeam: Buffer;
  mrSignerSeam: Buffer;
  seamAttributes: Buffer;
  tdAttributes: Buffer;
  xfam: Buffer;
  mrTd: Buffer;
  mrConfigId: Buffer;
  mrOwner: Buffer;
  mrOwnerConfig: Buffer;
  rtmr: [Buffer, Buffer, Buffer, Buffer];
  reportData: Buffer;
  /** TD report 1.5 only. */
  teeTcbSvn2?: Buffer;
  mrServiceTd?: Buffer;
}

export interface EnclaveReport {
  cpuSvn: Buffer;
  miscSelect: number;
  attributes: Buffer;
  mrEnclave: Buffer;
  mrSigner: Buffer;
  isvProdId: number;
  isvSvn: number;
  reportData: Buffer;
}

export interface QuoteLayout {
  /** Bytes covered by the quote signature: header, [v5 body descriptor], TD report. */
  signedLength: number;
  authDataSize: number;
  /** signedLength + 4 + authDataSize. */
  parsedLength: number;
  trailingBytes: number;
  /** Offsets into the raw buffer of each region (start inclusive, end exclusive), for diagnostics and tests. */
  regions: Record<
    "header" | "body" | "signature" | "attestationKey" | "qeReport" | "qeReportSignature" | "qeAuthData" | "pckChain",
    [number, number]
  >;
}

export interface TdxQuote {
  header: QuoteHeader;
  /** v5 body type (2 = TD 1.0, 3 = TD 1.5); 2 for v4. */
  bodyType: number;
  report: TdReport;
  /** Exactly the bytes the attestation key signed (a copy). */
  signedData: Buffer;
  signature: Buffer;
  attestationKey: Buffer;
  qeReportRaw: Buffer;
  qeReport: EnclaveReport;
  qeReportSignature: Buffer;
  qeAuthData: Buffer;
  /** Type-5 certification data as carried (PEM, leaf first, possibly NUL-terminated). */
  pckChainRaw: Buffer;
  layout: QuoteLayout;
}

class Reader {
  constructor(
    readonly buf: Buffer,
    public pos: number,
    readonly limit: number,
  ) {}
  need(n: number, field: string): void {
    if (this.pos + n > this.limit) {
      throw new QuoteFormatError(field, this.pos, `truncated: needs ${n} bytes, ${this.limit - this.pos} left`);
    }
  }
  bytes(n: number, field: string): Buffer {
    this.need(n, field);
    const b = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return b;
  }
  u16(field: string): number {
    this.need(2, field);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }
  u32(field: string): number {
    this.need(4, field);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
}

function parseHeader(buf: Buffer): QuoteHeader {
  if (buf.length < HEADER_LEN) {
    throw new QuoteFormatError("header", 0, `truncated: needs ${HEADER_LEN} bytes, ${buf.length} present`);
  }
  return {
    version: buf.readUInt16LE(0),
    attestationKeyType: buf.readUInt16LE(2),
    teeType: buf.readUInt32LE(4),
    qeSvn: buf.readUInt16LE(8),
    pceSvn: buf.readUInt16LE(10),
    qeVendorId: Buffer.from(buf.subarray(12, 28)),
    userData: Buffer.from(buf.subarray(28, 48)),
  };
}

function parseTdReport(r: Reader, kind: "td10" | "td15"): TdReport {
  const f = (n: number, name: string) => r.bytes(n, `td_report.${name}`);
  const rep: TdReport = {
    kind,
    teeTcbSvn: f(16, "tee_tcb_svn"),
    mrSeam: f(48, "mr_seam"),
    mrSignerSeam: f(48, "mr_signer_seam"),
    seamAttributes: f(8, "seam_attributes"),
    tdAttributes: f(8, "td_attributes"),
    xfam: f(8, "xfam"),
    mrTd: f(48, "mr_td"),
    mrConfigId: f(48, "mr_config_id"),
    mrOwner: f(48, "mr_owner"),
    mrOwnerConfig: f(48, "mr_owner_config"),
    rtmr: [f(48, "rtmr0"), f(48, "rtmr1"), f(48, "rtmr2"), f(48, "rtmr3")],
    reportData: f(64, "report_data"),
  };
  if (kind === "td15") {
    rep.teeTcbSvn2 = f(16, "tee_tcb_svn2");
    rep.mrServiceTd = f(48, "mr_servicetd");
  }
  return rep;
}

export function parseEnclaveReport(raw: Buffer): EnclaveReport {
  if (raw.length !== ENCLAVE_REPORT_LEN) {
    throw new QuoteFormatError("qe_report", 0, `must be ${ENCLAVE_REPORT_LEN} bytes, got ${raw.length}`);
  }
  return {
    cpuSvn: raw.subarray(0, 16),
    miscSelect: raw.readUInt32LE(16),
    attributes: raw.subarray(48, 64),
    mrEnclave: raw.subarray(64, 96),
    mrSigner: raw.subarray(128, 160),
    isvProdId: raw.readUInt16LE(256),
    isvSvn: raw.readUInt16LE(258),
    reportData: raw.subarray(320, 384),
  };
}

/**
 * Parses a TDX quote. Throws QuoteFormatError (field + offset) for malformed input and NotTdxQuoteError
 * for a well-formed non-TDX quote; callers that must not throw use verifyQuote instead.
 */
export function parseQuote(input: Uint8Array): TdxQuote {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (buf.length > MAX_QUOTE_BYTES) {
    throw new QuoteFormatError("quote", 0, `oversized: ${buf.length} bytes (limit ${MAX_QUOTE_BYTES})`);
  }
  const header = parseHeader(buf);
  if (header.teeType !== TEE_TYPE_TDX || header.version === 3) {
    const kind = header.teeType === TEE_TYPE_SGX ? "SGX" : `unknown TEE type 0x${header.teeType.toString(16).padStart(8, "0")}`;
    throw new NotTdxQuoteError(
      `not a TDX quote: TEE type 0x${header.teeType.toString(16).padStart(8, "0")} (${kind}), version ${header.version}` +
        (header.teeType === TEE_TYPE_TDX ? " (TDX quotes are version 4 or 5)" : ""),
    );
  }
  if (header.version !== 4 && header.version !== 5) {
    throw new QuoteFormatError("header.version", 0, `unsupported TDX quote version ${header.version} (expected 4 or 5)`);
  }
  if (header.attestationKeyType !== ATTESTATION_KEY_ECDSA_P256) {
    throw new QuoteFormatError(
      "header.attestation_key_type",
      2,
      `unsupported attestation key type ${header.attestationKeyType} (only 2 = ECDSA P-256)`,
    );
  }

  const r = new Reader(buf, HEADER_LEN, buf.length);
  let bodyType = 2;
  if (header.version === 5) {
    const at = r.pos;
    bodyType = r.u16("body.type");
    const bodySize = r.u32("body.size");
    const expected = bodyType === 2 ? TD10_LEN : bodyType === 3 ? TD15_LEN : -1;
    if (expected < 0) {
      throw new QuoteFormatError(
        "body.type",
        at,
        bodyType === 1 ? "body type 1 is an SGX enclave report, not a TD report" : `unknown body type ${bodyType}`,
      );
    }
    if (bodySize !== expected) {
      throw new QuoteFormatError("body.size", at + 2, `body type ${bodyType} must be ${expected} bytes, header says ${bodySize}`);
    }
  }
  const report = parseTdReport(r, bodyType === 3 ? "td15" : "td10");
  const signedLength = r.pos;

  const authSizeAt = r.pos;
  const authDataSize = r.u32("auth_data_size");
  if (authDataSize > buf.length - r.pos) {
    throw new QuoteFormatError(
      "auth_data_size",
      authSizeAt,
      `declares ${authDataSize} bytes but only ${buf.length - r.pos} follow (truncated quote)`,
    );
  }
  const authEnd = r.pos + authDataSize;
  const a = new Reader(buf, r.pos, authEnd);
  const sigAt = a.pos;
  const signature = a.bytes(64, "auth_data.signature");
  const keyAt = a.pos;
  const attestationKey = a.bytes(64, "auth_data.attestation_key");

  const outerAt = a.pos;
  const outerType = a.u16("certification_data.type");
  const outerSize = a.u32("certification_data.size");
  if (outerType !== 6) {
    throw new QuoteFormatError(
      "certification_data.type",
      outerAt,
      `expected 6 (QE report certification data), got ${outerType}`,
    );
  }
  if (a.pos + outerSize !== authEnd) {
    throw new QuoteFormatError(
      "certification_data.size",
      outerAt + 2,
      `declares ${outerSize} bytes but the auth data leaves ${authEnd - a.pos}`,
    );
  }
  const qeAt = a.pos;
  const qeReportRaw = a.bytes(ENCLAVE_REPORT_LEN, "qe_report");
  const qeSigAt = a.pos;
  const qeReportSignature = a.bytes(64, "qe_report_signature");
  const qeAuthSizeAt = a.pos;
  const qeAuthSize = a.u16("qe_auth_data.size");
  a.need(qeAuthSize, "qe_auth_data");
  const qeAuthData = a.bytes(qeAuthSize, "qe_auth_data");
  const innerAt = a.pos;
  const innerType = a.u16("pck_cert_data.type");
  const innerSize = a.u32("pck_cert_data.size");
  if (innerType !== 5) {
    throw new QuoteFormatError(
      "pck_cert_data.type",
      innerAt,
      `expected 5 (PCK certificate chain), got ${innerType}; other PCK encodings need the chain from collateral`,
    );
  }
  if (a.pos + innerSize !== authEnd) {
    throw new QuoteFormatError(
      "pck_cert_data.size",
      innerAt + 2,
      `declares ${innerSize} bytes but its container leaves ${authEnd - a.pos}`,
    );
  }
  const chainAt = a.pos;
  const pckChainRaw = a.bytes(innerSize, "pck_cert_data");

  return {
    header,
    bodyType,
    report,
    signedData: Buffer.from(buf.subarray(0, signedLength)),
    signature,
    attestationKey,
    qeReportRaw,
    qeReport: parseEnclaveReport(qeReportRaw),
    qeReportSignature,
    qeAuthData,
    pckChainRaw,
    layout: {
      signedLength,
      authDataSize,
      parsedLength: authEnd,
      trailingBytes: buf.length - authEnd,
      regions: {
        header: [0, HEADER_LEN],
        body: [HEADER_LEN, signedLength],
        signature: [sigAt, sigAt + 64],
        attestationKey: [keyAt, keyAt + 64],
        qeReport: [qeAt, qeAt + ENCLAVE_REPORT_LEN],
        qeReportSignature: [qeSigAt, qeSigAt + 64],
        qeAuthData: [qeAuthSizeAt + 2, qeAuthSizeAt + 2 + qeAuthSize],
        pckChain: [chainAt, chainAt + innerSize],
      },
    },
  };
}
