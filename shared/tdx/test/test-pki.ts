/**
 * Test-only stand-in for Intel's PKI: a root CA, a "PCK Platform CA", a PCK leaf that carries a real
 * fixture's SGX extension, and a TCB signing certificate, all generated here with @peculiar/x509. It
 * re-signs a fixture quote (new attestation key, QE report re-signed by the test PCK key) and its
 * collateral (TCB info / QE identity re-signed, CRLs issued by the test CAs), so revocation and CRL
 * handling can be exercised end to end; Intel's real keys obviously cannot sign test CRLs.
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { KeyObject, createHash, generateKeyPairSync, sign, webcrypto } from "node:crypto";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import type { Collateral } from "../collateral.js";
import { OID_SGX_EXTENSION, parseCertificate, splitPemChain } from "../pck.js";
import { parseQuote } from "../quote.js";
import type { Fixture } from "./fixtures.js";

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

async function keys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"])) as CryptoKeyPair;
}

export interface TestPkiOptions {
  /** Certificates are valid in [notBefore, notAfter]. */
  notBefore: Date;
  notAfter: Date;
  /** Raw extnValue of the SGX extension to put into the PCK leaf. */
  sgxExtension: Buffer;
}

export interface CrlOptions {
  revokedSerials?: string[];
  thisUpdate: Date;
  nextUpdate: Date;
  /** Sign with this key instead of the issuer's (a forged CRL). */
  signingKey?: CryptoKey;
}

export class TestPki {
  private constructor(
    readonly root: x509.X509Certificate,
    readonly rootKeys: CryptoKeyPair,
    readonly pckCa: x509.X509Certificate,
    readonly pckCaKeys: CryptoKeyPair,
    readonly pckLeaf: x509.X509Certificate,
    readonly pckLeafKeys: CryptoKeyPair,
    readonly tcbSigner: x509.X509Certificate,
    readonly tcbSignerKeys: CryptoKeyPair,
  ) {}

  static async create(o: TestPkiOptions): Promise<TestPki> {
    const [rootKeys, caKeys, leafKeys, tcbKeys] = await Promise.all([keys(), keys(), keys(), keys()]);
    const base = { notBefore: o.notBefore, notAfter: o.notAfter, signingAlgorithm: ALG };
    const ca = (pathLen?: number) => [
      new x509.BasicConstraintsExtension(true, pathLen, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ];
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      ...base,
      serialNumber: "01",
      name: "CN=Test SGX Root CA, O=cvm tests",
      keys: rootKeys,
      extensions: ca(1),
    });
    const pckCa = await x509.X509CertificateGenerator.create({
      ...base,
      serialNumber: "02",
      subject: "CN=Test SGX PCK Platform CA, O=cvm tests",
      issuer: root.subject,
      publicKey: caKeys.publicKey,
      signingKey: rootKeys.privateKey,
      extensions: ca(0),
    });
    const pckLeaf = await x509.X509CertificateGenerator.create({
      ...base,
      serialNumber: "0a0b0c0d",
      subject: "CN=Test SGX PCK Certificate, O=cvm tests",
      issuer: pckCa.subject,
      publicKey: leafKeys.publicKey,
      signingKey: caKeys.privateKey,
      extensions: [
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.nonRepudiation, true),
        new x509.Extension(OID_SGX_EXTENSION, false, o.sgxExtension),
      ],
    });
    const tcbSigner = await x509.X509CertificateGenerator.create({
      ...base,
      serialNumber: "03",
      subject: "CN=Test SGX TCB Signing, O=cvm tests",
      issuer: root.subject,
      publicKey: tcbKeys.publicKey,
      signingKey: rootKeys.privateKey,
      extensions: [new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.nonRepudiation, true)],
    });
    return new TestPki(root, rootKeys, pckCa, caKeys, pckLeaf, leafKeys, tcbSigner, tcbKeys);
  }

  get rootDer(): Buffer {
    return Buffer.from(this.root.rawData);
  }

  static pem(...certs: x509.X509Certificate[]): string {
    return certs.map((c) => c.toString("pem").replace(/\r\n/g, "\n") + "\n").join("");
  }

  async crl(issuer: "root" | "pckCa", o: CrlOptions): Promise<Buffer> {
    const cert = issuer === "root" ? this.root : this.pckCa;
    const key = o.signingKey ?? (issuer === "root" ? this.rootKeys : this.pckCaKeys).privateKey;
    const crl = await x509.X509CrlGenerator.create({
      issuer: cert.subject,
      thisUpdate: o.thisUpdate,
      nextUpdate: o.nextUpdate,
      signingAlgorithm: ALG,
      signingKey: key,
      entries: (o.revokedSerials ?? []).map((s) => ({ serialNumber: s, revocationDate: o.thisUpdate })),
    });
    return Buffer.from(crl.rawData);
  }

  static async keyObject(k: CryptoKey): Promise<KeyObject> {
    return KeyObject.from(k);
  }

  /** Collateral signed by this PKI; tcb_info / qe_identity text is reused byte for byte. */
  async collateral(from: Collateral, crls: { root: Buffer; pck: Buffer }): Promise<Collateral> {
    const tcbKey = KeyObject.from(this.tcbSignerKeys.privateKey);
    const sig = (text: string) => sign("sha256", Buffer.from(text, "utf8"), { key: tcbKey, dsaEncoding: "ieee-p1363" }).toString("hex");
    const tcbChain = TestPki.pem(this.tcbSigner, this.root);
    return {
      pck_crl_issuer_chain: TestPki.pem(this.pckCa, this.root),
      root_ca_crl: crls.root.toString("hex"),
      pck_crl: crls.pck.toString("hex"),
      tcb_info_issuer_chain: tcbChain,
      tcb_info: from.tcb_info,
      tcb_info_signature: sig(from.tcb_info),
      qe_identity_issuer_chain: tcbChain,
      qe_identity: from.qe_identity,
      qe_identity_signature: sig(from.qe_identity),
    };
  }

  /**
   * Rebuilds a fixture quote under this PKI: fresh attestation key, QE report data bound to it, QE
   * report signed by the test PCK key, test chain (NUL-terminated like real quotes), quote re-signed.
   * `editSigned` may change header/body bytes before signing.
   */
  async resignQuote(original: Buffer, editSigned?: (signed: Buffer) => void): Promise<Buffer> {
    const q = parseQuote(original);
    const signed = Buffer.from(q.signedData);
    editSigned?.(signed);
    const att = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const spki = att.publicKey.export({ format: "der", type: "spki" });
    const attRaw = spki.subarray(spki.length - 64);
    const qeReport = Buffer.from(q.qeReportRaw);
    createHash("sha256").update(attRaw).update(q.qeAuthData).digest().copy(qeReport, 320);
    qeReport.fill(0, 352, 384);
    const leafKey = KeyObject.from(this.pckLeafKeys.privateKey);
    const qeSig = sign("sha256", qeReport, { key: leafKey, dsaEncoding: "ieee-p1363" });
    const quoteSig = sign("sha256", signed, { key: att.privateKey, dsaEncoding: "ieee-p1363" });
    const chain = Buffer.concat([Buffer.from(TestPki.pem(this.pckLeaf, this.pckCa, this.root), "latin1"), Buffer.from([0])]);
    // sanity: the strict parser accepts what we produce
    splitPemChain(chain, "test chain", true).forEach((d) => parseCertificate(d));
    const u16 = (n: number) => {
      const b = Buffer.alloc(2);
      b.writeUInt16LE(n, 0);
      return b;
    };
    const u32 = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n, 0);
      return b;
    };
    const inner = Buffer.concat([u16(5), u32(chain.length), chain]);
    const outerBody = Buffer.concat([qeReport, qeSig, u16(q.qeAuthData.length), q.qeAuthData, inner]);
    const auth = Buffer.concat([quoteSig, attRaw, u16(6), u32(outerBody.length), outerBody]);
    return Buffer.concat([signed, u32(auth.length), auth]);
  }
}

/** Offsets in a TD report 1.0 quote's signed bytes (48-byte header, then the report body). */
const RTMR3_OFFSET = 48 + 472;
const REPORT_DATA_OFFSET = 48 + 520;

export interface FixtureQuoter {
  pki: TestPki;
  /** The fixture's collateral re-signed by the test PKI, CRLs valid a day either side of `at`. */
  collateral: Collateral;
  /** A quote of the fixture's TD carrying this REPORTDATA and RTMR3, signed under the test PKI. */
  quote(reportData: Buffer, rtmr3: Buffer): Promise<Buffer>;
}

/**
 * TEST DOUBLE of TDX hardware's quoting, for tests that need a quote over their own REPORTDATA
 * (Intel's keys sign only what a real TD asks for): a test PKI whose PCK certificate carries fixture
 * `f`'s SGX extension (so its FMSPC and TCB levels, hence its TCB status), and quotes of `f`'s TD with
 * the REPORTDATA and RTMR3 a guest would have put there. Verifiers must pin `pki.rootDer`.
 */
export async function fixtureQuoter(f: Fixture, at: Date): Promise<FixtureQuoter> {
  const leaf = splitPemChain(parseQuote(f.quote).pckChainRaw, "PCK chain", true)[0]!;
  const pki = await TestPki.create({ notBefore: new Date("2020-01-01T00:00:00Z"), notAfter: new Date("2040-01-01T00:00:00Z"), sgxExtension: parseCertificate(leaf).sgxExtension! });
  const window = { thisUpdate: new Date(at.getTime() - 86400e3), nextUpdate: new Date(at.getTime() + 86400e3) };
  const collateral = await pki.collateral(f.collateral!, { root: await pki.crl("root", window), pck: await pki.crl("pckCa", window) });
  return {
    pki,
    collateral,
    quote: (reportData, rtmr3) =>
      pki.resignQuote(f.quote, (signed) => {
        reportData.copy(signed, REPORT_DATA_OFFSET);
        rtmr3.copy(signed, RTMR3_OFFSET);
      }),
  };
}
