/**
 * X.509 for DCAP: strict PEM/DER decoding, chain validation to the pinned Intel SGX Root CA, CRLs
 * (including the CRLs' own signatures and validity windows) and Intel's SGX extension of PCK
 * certificates (OID 1.2.840.113741.1.13.1).
 *
 * The signed bytes (TBS), signature and key are cut out with our own strict DER reader and checked with
 * node:crypto: one X.509 decode with @peculiar/x509 costs 0.4-0.8 ms per certificate here, more than
 * all signature checks of a quote together, so @peculiar/x509 is used only for the readable
 * names shown in verdicts and errors (decoded lazily, once per certificate).
 */
import "reflect-metadata";
import { X509Certificate as PeculiarCertificate } from "@peculiar/x509";
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from "node:crypto";
import { DerError, TAG, children, decodeOid, decodeSmallUint, expectTag, readWhole, type DerNode } from "./der.js";
import { INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SHA256 } from "./root-ca.js";

/** Stable codes let callers (and tests) tell failure kinds apart without matching message text. */
export type PkiErrorCode =
  | "bad_encoding"
  | "bad_certificate"
  | "untrusted_root"
  | "bad_chain"
  | "bad_signature"
  | "expired"
  | "not_yet_valid"
  | "revoked"
  | "bad_crl"
  | "crl_expired"
  | "bad_extension";

export class PkiError extends Error {
  override name = "PkiError";
  constructor(
    readonly code: PkiErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2";
const OID_BASIC_CONSTRAINTS = "2.5.29.19";
const OID_KEY_USAGE = "2.5.29.15";
export const OID_SGX_EXTENSION = "1.2.840.113741.1.13.1";
/** Extensions Intel's certificates carry that we do not interpret; any other critical one is refused. */
const KNOWN_EXTENSIONS = new Set([
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  OID_SGX_EXTENSION,
  "2.5.29.35", // authorityKeyIdentifier
  "2.5.29.14", // subjectKeyIdentifier
  "2.5.29.31", // cRLDistributionPoints
]);
const KU_KEY_CERT_SIGN = 5;
const KU_CRL_SIGN = 6;

export interface Certificate {
  der: Buffer;
  sha256: string;
  tbs: Buffer;
  /** DER ECDSA-Sig-Value. */
  signature: Buffer;
  spki: Buffer;
  publicKey: KeyObject;
  subjectDer: Buffer;
  issuerDer: Buffer;
  /** Lowercase hex of the INTEGER content bytes, as encoded (comparable with CRL entries). */
  serialHex: string;
  notBefore: Date;
  notAfter: Date;
  isCa: boolean;
  pathLen?: number;
  /** Key usage bits (bit 0 = digitalSignature), undefined when the extension is absent. */
  keyUsage?: Set<number>;
  /** Raw extnValue of Intel's SGX extension, present on PCK leaf certificates. */
  sgxExtension?: Buffer;
  /** Readable subject/issuer, decoded on first use. */
  readonly subject: string;
  readonly issuer: string;
}

function bad(code: PkiErrorCode, msg: string, cause?: unknown): PkiError {
  const e = new PkiError(code, cause instanceof Error ? `${msg}: ${cause.message}` : msg);
  return e;
}

/** Reads UTCTime / GeneralizedTime in the restricted forms RFC 5280 allows (Zulu, seconds, no fraction). */
export function decodeTime(node: DerNode, what: string): Date {
  const s = node.content.toString("latin1");
  let m: RegExpMatchArray | null;
  let year: number;
  if (node.tag === 0x17 && (m = s.match(/^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/))) {
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (node.tag === 0x18 && (m = s.match(/^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/))) {
    year = Number(m[1]);
  } else {
    throw new DerError(`${what}: not a valid UTCTime/GeneralizedTime`, node.start);
  }
  const d = new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
  if (Number.isNaN(d.getTime())) throw new DerError(`${what}: invalid date`, node.start);
  return d;
}

function signatureAlgorithmIsEcdsaSha256(node: DerNode, buf: Buffer): boolean {
  const parts = children(buf, expectTag(node, TAG.SEQUENCE, "signature algorithm"));
  return parts.length === 1 && parts[0]!.tag === TAG.OID && decodeOid(parts[0]!.content) === OID_ECDSA_SHA256;
}

function bitStringBytes(node: DerNode, what: string): Buffer {
  expectTag(node, TAG.BIT_STRING, what);
  if (node.content.length < 1 || node.content[0] !== 0) throw new DerError(`${what}: unused bits must be 0`, node.start);
  return node.content.subarray(1);
}

function p256Key(spki: Buffer, what: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: spki, format: "der", type: "spki" });
  } catch (e) {
    throw bad("bad_certificate", `${what}: unreadable public key`, e);
  }
  if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
    throw bad("bad_certificate", `${what}: public key is not ECDSA P-256`);
  }
  return key;
}

function parseExtensions(buf: Buffer, node: DerNode, cert: Partial<Certificate>, what: string): void {
  const list = children(buf, expectTag(children(buf, node)[0]!, TAG.SEQUENCE, "extensions"));
  if (children(buf, node).length !== 1) throw new DerError(`${what}: malformed extensions wrapper`, node.start);
  const seen = new Set<string>();
  for (const ext of list) {
    const parts = children(buf, expectTag(ext, TAG.SEQUENCE, "extension"));
    const oid = decodeOid(expectTag(parts[0]!, TAG.OID, "extension id").content);
    let critical = false;
    let valueNode: DerNode;
    if (parts.length === 3) {
      const b = expectTag(parts[1]!, TAG.BOOLEAN, "extension critical flag");
      if (b.content.length !== 1 || b.content[0] !== 0xff) throw new DerError("critical flag must be DER TRUE", b.start);
      critical = true;
      valueNode = parts[2]!;
    } else if (parts.length === 2) {
      valueNode = parts[1]!;
    } else {
      throw new DerError("extension must have 2 or 3 fields", ext.start);
    }
    const value = expectTag(valueNode, TAG.OCTET_STRING, "extension value").content;
    if (seen.has(oid)) throw bad("bad_certificate", `${what}: duplicate extension ${oid}`);
    seen.add(oid);
    if (critical && !KNOWN_EXTENSIONS.has(oid)) throw bad("bad_certificate", `${what}: unknown critical extension ${oid}`);
    if (oid === OID_BASIC_CONSTRAINTS) {
      const bc = readWhole(value);
      const f = children(value, expectTag(bc, TAG.SEQUENCE, "basicConstraints"));
      let i = 0;
      if (f[i]?.tag === TAG.BOOLEAN) {
        cert.isCa = f[i]!.content[0] === 0xff;
        i++;
      }
      if (f[i]?.tag === TAG.INTEGER) {
        cert.pathLen = decodeSmallUint(f[i]!, "pathLenConstraint");
        i++;
      }
      if (i !== f.length) throw new DerError("basicConstraints has unexpected fields", bc.start);
    } else if (oid === OID_KEY_USAGE) {
      const bits = bitStringBytesLoose(readWhole(value));
      const set = new Set<number>();
      for (let bit = 0; bit < bits.length * 8; bit++) if (bits[bit >> 3]! & (0x80 >> (bit & 7))) set.add(bit);
      cert.keyUsage = set;
    } else if (oid === OID_SGX_EXTENSION) {
      cert.sgxExtension = Buffer.from(value);
    }
  }
}

/** keyUsage is a named-bit BIT STRING, so unused bits may be non-zero in the count. */
function bitStringBytesLoose(node: DerNode): Buffer {
  expectTag(node, TAG.BIT_STRING, "keyUsage");
  if (node.content.length < 1 || node.content[0]! > 7) throw new DerError("keyUsage: bad unused-bits count", node.start);
  return node.content.subarray(1);
}

/** Decodes one DER certificate; only ECDSA P-256 / SHA-256 certificates (all that DCAP uses) are accepted. */
export function parseCertificate(derInput: Uint8Array, what = "certificate"): Certificate {
  const der = Buffer.from(derInput);
  try {
    const top = readWhole(der);
    const parts = children(der, expectTag(top, TAG.SEQUENCE, "Certificate"));
    if (parts.length !== 3) throw new DerError("Certificate must have 3 fields", 0);
    const [tbsNode, algNode, sigNode] = parts as [DerNode, DerNode, DerNode];
    const tbsParts = children(der, expectTag(tbsNode, TAG.SEQUENCE, "TBSCertificate"));
    let i = 0;
    if (tbsParts[0]?.tag !== 0xa0) throw bad("bad_certificate", `${what}: not an X.509 v3 certificate`);
    const ver = children(der, tbsParts[0]);
    if (ver.length !== 1 || decodeSmallUint(ver[0]!, "version") !== 2) throw bad("bad_certificate", `${what}: not X.509 v3`);
    i++;
    const serial = expectTag(tbsParts[i++]!, TAG.INTEGER, "serialNumber");
    const innerAlg = tbsParts[i++]!;
    const issuer = expectTag(tbsParts[i++]!, TAG.SEQUENCE, "issuer");
    const validity = children(der, expectTag(tbsParts[i++]!, TAG.SEQUENCE, "validity"));
    const subject = expectTag(tbsParts[i++]!, TAG.SEQUENCE, "subject");
    const spkiNode = expectTag(tbsParts[i++]!, TAG.SEQUENCE, "subjectPublicKeyInfo");
    if (!innerAlg.raw.equals(algNode.raw) || !signatureAlgorithmIsEcdsaSha256(algNode, der)) {
      throw bad("bad_certificate", `${what}: signature algorithm is not ecdsa-with-SHA256 (or differs inside/outside TBS)`);
    }
    if (validity.length !== 2) throw new DerError("validity must have 2 fields", tbsNode.start);
    const cert: Partial<Certificate> = { isCa: false };
    for (; i < tbsParts.length; i++) {
      const n = tbsParts[i]!;
      if (n.tag === 0xa3 && i === tbsParts.length - 1) parseExtensions(der, n, cert, what);
      else throw bad("bad_certificate", `${what}: unexpected TBS field with tag 0x${n.tag.toString(16)}`);
    }
    const spki = Buffer.from(spkiNode.raw);
    let peculiar: PeculiarCertificate | undefined;
    const readable = () => (peculiar ??= new PeculiarCertificate(der));
    const full: Certificate = {
      ...(cert as Certificate),
      der,
      sha256: createHash("sha256").update(der).digest("hex"),
      tbs: Buffer.from(tbsNode.raw),
      signature: Buffer.from(bitStringBytes(sigNode, "signatureValue")),
      spki,
      publicKey: p256Key(spki, what),
      subjectDer: Buffer.from(subject.raw),
      issuerDer: Buffer.from(issuer.raw),
      serialHex: serial.content.toString("hex"),
      notBefore: decodeTime(validity[0]!, "notBefore"),
      notAfter: decodeTime(validity[1]!, "notAfter"),
      get subject() {
        return readable().subject;
      },
      get issuer() {
        return readable().issuer;
      },
    };
    return full;
  } catch (e) {
    if (e instanceof PkiError) throw e;
    throw bad("bad_certificate", `${what}: malformed DER`, e);
  }
}

const PEM_BEGIN = "-----BEGIN CERTIFICATE-----";
const PEM_END = "-----END CERTIFICATE-----";

/**
 * Splits concatenated PEM certificates into DER.
 * strict: the exact form quotes carry (64-column lines, "\n" endings, nothing between blocks, one
 * optional NUL at the end), so that no byte of the chain can change without changing a certificate.
 * Otherwise whitespace between lines is tolerated (collateral headers from PCS/PCCS vary), but the
 * base64 must still be canonical.
 */
export function splitPemChain(input: Uint8Array | string, what: string, strict: boolean): Buffer[] {
  let text = typeof input === "string" ? input : Buffer.from(input).toString("latin1");
  if (text.endsWith("\0")) text = text.slice(0, -1);
  const out: Buffer[] = [];
  let pos = 0;
  const fail = (msg: string) => bad("bad_encoding", `${what}: ${msg} (at byte ${pos})`);
  while (pos < text.length) {
    if (!strict) {
      const ws = /^\s*/.exec(text.slice(pos))![0].length;
      pos += ws;
      if (pos >= text.length) break;
    }
    if (!text.startsWith(PEM_BEGIN, pos)) throw fail("expected -----BEGIN CERTIFICATE-----");
    pos += PEM_BEGIN.length;
    const end = text.indexOf(PEM_END, pos);
    if (end < 0) throw fail("missing -----END CERTIFICATE-----");
    const body = text.slice(pos, end);
    let b64: string;
    if (strict) {
      if (!/^\n(?:[A-Za-z0-9+/]{64}\n)*[A-Za-z0-9+/=]{1,64}\n$/.test(body)) throw fail("PEM body is not 64-column base64 lines");
      b64 = body.replace(/\n/g, "");
    } else {
      b64 = body.replace(/[ \t\r\n]+/g, "");
    }
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64) || b64.length % 4 !== 0) throw fail("invalid base64");
    const der = Buffer.from(b64, "base64");
    // Node's decoder ignores stray bits in the final quantum; re-encoding catches them.
    if (der.toString("base64") !== b64) throw fail("non-canonical base64");
    out.push(der);
    pos = end + PEM_END.length;
    if (strict) {
      if (text[pos] !== "\n") throw fail("expected a newline after -----END CERTIFICATE-----");
      pos++;
    }
  }
  if (out.length === 0) throw bad("bad_encoding", `${what}: no certificates`);
  return out;
}

let pinnedRoot: Certificate | undefined;
/** The embedded Intel SGX Root CA, decoded once; its digest is checked against the pinned value. */
export function intelRootCa(): Certificate {
  if (!pinnedRoot) {
    const der = splitPemChain(INTEL_SGX_ROOT_CA_PEM, "embedded root CA", false)[0]!;
    const cert = parseCertificate(der, "Intel SGX Root CA");
    if (cert.sha256 !== INTEL_SGX_ROOT_CA_SHA256) throw new Error("embedded Intel SGX Root CA does not match its pinned SHA-256");
    pinnedRoot = cert;
  }
  return pinnedRoot;
}

export function verifySignedBy(data: Buffer, derSignature: Buffer, key: KeyObject): boolean {
  try {
    return cryptoVerify("sha256", data, key, derSignature);
  } catch {
    return false;
  }
}

/** Verifies a raw r||s (IEEE P1363) P-256/SHA-256 signature, the form DCAP uses outside X.509. */
export function verifyRawSignature(data: Buffer, rawSignature: Buffer, key: KeyObject): boolean {
  if (rawSignature.length !== 64) return false;
  try {
    return cryptoVerify("sha256", data, { key, dsaEncoding: "ieee-p1363" }, rawSignature);
  } catch {
    return false;
  }
}

function checkValidity(c: Certificate, at: Date, label: string): void {
  if (at < c.notBefore) {
    throw bad("not_yet_valid", `${label}: certificate "${c.subject}" is not valid before ${c.notBefore.toISOString()} (checked at ${at.toISOString()})`);
  }
  if (at > c.notAfter) {
    throw bad("expired", `${label}: certificate "${c.subject}" expired at ${c.notAfter.toISOString()} (checked at ${at.toISOString()})`);
  }
}

export interface VerifiedChain {
  /** Leaf first, pinned root last. */
  certs: Certificate[];
  /** Intersection of the certificates' validity periods. */
  notBefore: Date;
  notAfter: Date;
}

/**
 * Validates leaf → ... → root: names chain, each signature verifies under the parent's key, parents are
 * CAs allowed to sign certificates (with path length), the leaf is not a CA, the last certificate is the
 * pinned root byte for byte (a chain that stops just below the root gets the pinned root appended), and
 * every certificate is valid at `at`.
 */
export function verifyChain(
  input: Certificate[],
  root: Certificate,
  at: Date,
  label: string,
  opts: { leafIsCa?: boolean } = {},
): VerifiedChain {
  if (input.length === 0) throw bad("bad_chain", `${label}: empty certificate chain`);
  const certs = [...input];
  const last = certs[certs.length - 1]!;
  if (last.sha256 !== root.sha256) {
    if (last.issuerDer.equals(root.subjectDer) && !last.subjectDer.equals(last.issuerDer)) certs.push(root);
    else {
      throw bad(
        "untrusted_root",
        `${label}: chain ends in "${last.subject}" (SHA-256 ${last.sha256}), not the pinned Intel SGX Root CA (${root.sha256})`,
      );
    }
  }
  if (certs.length < 2) throw bad("bad_chain", `${label}: chain holds only the root CA`);
  let notBefore = new Date(0);
  let notAfter = new Date(8640000000000000);
  for (let i = 0; i < certs.length; i++) {
    const c = certs[i]!;
    checkValidity(c, at, label);
    if (c.notBefore > notBefore) notBefore = c.notBefore;
    if (c.notAfter < notAfter) notAfter = c.notAfter;
    if (i === certs.length - 1) break;
    const parent = certs[i + 1]!;
    if (!c.issuerDer.equals(parent.subjectDer)) {
      throw bad("bad_chain", `${label}: "${c.subject}" is issued by "${c.issuer}", but the next certificate is "${parent.subject}"`);
    }
    if (!parent.isCa) throw bad("bad_chain", `${label}: "${parent.subject}" is not a CA but issued "${c.subject}"`);
    if (parent.keyUsage && !parent.keyUsage.has(KU_KEY_CERT_SIGN)) {
      throw bad("bad_chain", `${label}: "${parent.subject}" may not sign certificates (keyUsage)`);
    }
    const below = i; // intermediates strictly between parent and the leaf
    if (parent.pathLen !== undefined && below > parent.pathLen) {
      throw bad("bad_chain", `${label}: path length constraint of "${parent.subject}" exceeded`);
    }
    if (i === 0 && c.isCa !== (opts.leafIsCa ?? false)) {
      throw bad("bad_chain", `${label}: "${c.subject}" ${c.isCa ? "is" : "is not"} a CA certificate`);
    }
    if (!verifySignedBy(c.tbs, c.signature, parent.publicKey)) {
      throw bad("bad_signature", `${label}: signature of "${c.subject}" does not verify under "${parent.subject}"`);
    }
  }
  return { certs, notBefore, notAfter };
}

export interface Crl {
  der: Buffer;
  sha256: string;
  tbs: Buffer;
  signature: Buffer;
  issuerDer: Buffer;
  thisUpdate: Date;
  nextUpdate?: Date;
  /** Serial numbers (lowercase hex of INTEGER content) of revoked certificates. */
  revoked: Set<string>;
}

export function parseCrl(derInput: Uint8Array, what: string): Crl {
  const der = Buffer.from(derInput);
  try {
    const top = readWhole(der);
    const parts = children(der, expectTag(top, TAG.SEQUENCE, "CertificateList"));
    if (parts.length !== 3) throw new DerError("CertificateList must have 3 fields", 0);
    const [tbsNode, algNode, sigNode] = parts as [DerNode, DerNode, DerNode];
    const f = children(der, expectTag(tbsNode, TAG.SEQUENCE, "TBSCertList"));
    let i = 0;
    if (f[i]?.tag === TAG.INTEGER) {
      if (decodeSmallUint(f[i]!, "CRL version") !== 1) throw new DerError("unsupported CRL version", f[i]!.start);
      i++;
    }
    const innerAlg = f[i++]!;
    if (!innerAlg.raw.equals(algNode.raw) || !signatureAlgorithmIsEcdsaSha256(algNode, der)) {
      throw bad("bad_crl", `${what}: signature algorithm is not ecdsa-with-SHA256 (or differs inside/outside TBS)`);
    }
    const issuer = expectTag(f[i++]!, TAG.SEQUENCE, "CRL issuer");
    const thisUpdate = decodeTime(f[i++]!, "thisUpdate");
    let nextUpdate: Date | undefined;
    if (f[i] && (f[i]!.tag === 0x17 || f[i]!.tag === 0x18)) nextUpdate = decodeTime(f[i++]!, "nextUpdate");
    const revoked = new Set<string>();
    if (f[i]?.tag === TAG.SEQUENCE) {
      for (const entry of children(der, f[i++]!)) {
        const e = children(der, expectTag(entry, TAG.SEQUENCE, "revoked entry"));
        if (e.length < 2 || e.length > 3) throw new DerError("revoked entry must have 2 or 3 fields", entry.start);
        revoked.add(expectTag(e[0]!, TAG.INTEGER, "revoked serial").content.toString("hex"));
        decodeTime(e[1]!, "revocationDate");
      }
    }
    if (f[i]?.tag === 0xa0) i++;
    if (i !== f.length) throw new DerError("unexpected fields in TBSCertList", tbsNode.start);
    return {
      der,
      sha256: createHash("sha256").update(der).digest("hex"),
      tbs: Buffer.from(tbsNode.raw),
      signature: Buffer.from(bitStringBytes(sigNode, "CRL signature")),
      issuerDer: Buffer.from(issuer.raw),
      thisUpdate,
      nextUpdate,
      revoked,
    };
  } catch (e) {
    if (e instanceof PkiError) throw e;
    throw bad("bad_crl", `${what}: malformed DER`, e);
  }
}

/** Checks a CRL's own signature (by `issuer`, itself already validated), its issuer name and its window. */
export function verifyCrl(crl: Crl, issuer: Certificate, at: Date, what: string): void {
  if (!crl.issuerDer.equals(issuer.subjectDer)) {
    throw bad("bad_crl", `${what}: issued by a different CA than "${issuer.subject}"`);
  }
  if (issuer.keyUsage && !issuer.keyUsage.has(KU_CRL_SIGN)) throw bad("bad_crl", `${what}: "${issuer.subject}" may not sign CRLs`);
  if (!verifySignedBy(crl.tbs, crl.signature, issuer.publicKey)) {
    throw bad("bad_crl", `${what}: signature does not verify under "${issuer.subject}"`);
  }
  if (at < crl.thisUpdate) {
    throw bad("crl_expired", `${what}: not valid before its thisUpdate ${crl.thisUpdate.toISOString()} (checked at ${at.toISOString()})`);
  }
  if (!crl.nextUpdate) throw bad("bad_crl", `${what}: has no nextUpdate`);
  if (at > crl.nextUpdate) {
    throw bad("crl_expired", `${what}: expired at its nextUpdate ${crl.nextUpdate.toISOString()} (checked at ${at.toISOString()})`);
  }
}

export function checkNotRevoked(cert: Certificate, crl: Crl, label: string): void {
  if (!cert.issuerDer.equals(crl.issuerDer)) {
    throw bad("bad_crl", `${label}: CRL issuer does not match the issuer of "${cert.subject}"`);
  }
  if (crl.revoked.has(cert.serialHex)) {
    throw bad("revoked", `${label}: certificate "${cert.subject}" (serial ${cert.serialHex}) is revoked`);
  }
}

export interface SgxExtension {
  ppid: Buffer;
  /** SGX TCB components 1..16 (OIDs ...13.1.2.1 .. .2.16). */
  sgxTcbComponents: number[];
  pceSvn: number;
  cpuSvn: Buffer;
  pceId: Buffer;
  fmspc: Buffer;
  sgxType?: number;
}

const SGX = OID_SGX_EXTENSION;

/** Decodes Intel's SGX extension of a PCK certificate (SEQUENCE of {OID, value} pairs, TCB nested). */
export function parseSgxExtension(value: Buffer): SgxExtension {
  try {
    const top = readWhole(value);
    const items = new Map<string, DerNode>();
    for (const item of children(value, expectTag(top, TAG.SEQUENCE, "SGX extension"))) {
      const kv = children(value, expectTag(item, TAG.SEQUENCE, "SGX extension item"));
      if (kv.length !== 2) throw new DerError("SGX extension item must be {OID, value}", item.start);
      const oid = decodeOid(expectTag(kv[0]!, TAG.OID, "SGX extension item id").content);
      if (items.has(oid)) throw bad("bad_extension", `duplicate SGX extension item ${oid}`);
      items.set(oid, kv[1]!);
    }
    const need = (suffix: string, what: string) => {
      const n = items.get(`${SGX}.${suffix}`);
      if (!n) throw bad("bad_extension", `PCK certificate SGX extension lacks ${what} (${SGX}.${suffix})`);
      return n;
    };
    const octets = (n: DerNode, len: number, what: string) => {
      expectTag(n, TAG.OCTET_STRING, what);
      if (n.content.length !== len) throw bad("bad_extension", `${what} must be ${len} bytes, got ${n.content.length}`);
      return Buffer.from(n.content);
    };
    const tcbNode = need("2", "TCB");
    const tcb = new Map<string, DerNode>();
    for (const item of children(value, expectTag(tcbNode, TAG.SEQUENCE, "TCB"))) {
      const kv = children(value, expectTag(item, TAG.SEQUENCE, "TCB item"));
      if (kv.length !== 2) throw new DerError("TCB item must be {OID, value}", item.start);
      const oid = decodeOid(expectTag(kv[0]!, TAG.OID, "TCB item id").content);
      if (tcb.has(oid)) throw bad("bad_extension", `duplicate TCB item ${oid}`);
      tcb.set(oid, kv[1]!);
    }
    const comps: number[] = [];
    for (let k = 1; k <= 16; k++) {
      const n = tcb.get(`${SGX}.2.${k}`);
      if (!n) throw bad("bad_extension", `PCK certificate TCB lacks SGX TCB component ${k}`);
      comps.push(decodeSmallUint(n, `SGX TCB component ${k}`));
    }
    const pce = tcb.get(`${SGX}.2.17`);
    const cpu = tcb.get(`${SGX}.2.18`);
    if (!pce || !cpu) throw bad("bad_extension", "PCK certificate TCB lacks PCESVN or CPUSVN");
    const sgxTypeNode = items.get(`${SGX}.5`);
    return {
      ppid: octets(need("1", "PPID"), 16, "PPID"),
      sgxTcbComponents: comps,
      pceSvn: decodeSmallUint(pce, "PCESVN"),
      cpuSvn: octets(cpu, 16, "CPUSVN"),
      pceId: octets(need("3", "PCE-ID"), 2, "PCE-ID"),
      fmspc: octets(need("4", "FMSPC"), 6, "FMSPC"),
      sgxType: sgxTypeNode ? decodeSmallUint(sgxTypeNode, "SGX type") : undefined,
    };
  } catch (e) {
    if (e instanceof PkiError) throw e;
    throw bad("bad_extension", "PCK certificate SGX extension is malformed", e);
  }
}
