import type { webcrypto } from "node:crypto";
import { createRequire } from "node:module";
import { beforeAll, describe, expect, test } from "vitest";
import type { Collateral } from "./collateral.js";
import { parseCertificate, parseSgxExtension, splitPemChain } from "./pck.js";
import { parseQuote } from "./quote.js";
import { allFixtures, loadFixture, type Fixture } from "./test/fixtures.js";
import { TestPki } from "./test/test-pki.js";
import { QuoteVerifier, VerificationCache, verifyQuote, verifyQuoteSync, type Verdict } from "./verify.js";

// The pure-JavaScript build of dcap-qvl (its package main); the wasm build rejects v5 quotes.
const dcap = createRequire(import.meta.url)("@phala/dcap-qvl") as {
  verify(q: Buffer, c: Collateral, at: number): { status: string; advisory_ids: string[] };
  Quote: { parse(q: Buffer): { report: { asTd10(): Record<string, Uint8Array> } } };
};

function dcapVerdict(f: Fixture, at: number) {
  try {
    const r = dcap.verify(f.quote, f.collateral!, at);
    return { ok: true, status: r.status as string | null, advisory_ids: [...r.advisory_ids], error: undefined as string | undefined };
  } catch (e) {
    return { ok: false, status: null, advisory_ids: [] as string[], error: (e as Error).message };
  }
}

function dcapMeasurements(q: Buffer) {
  const t = dcap.Quote.parse(q).report.asTd10();
  const h = (k: string) => Buffer.from(t[k]!).toString("hex");
  return {
    mrtd: h("mrTd"),
    rtmr0: h("rtMr0"),
    rtmr1: h("rtMr1"),
    rtmr2: h("rtMr2"),
    rtmr3: h("rtMr3"),
    mr_config_id: h("mrConfigId"),
    mr_owner: h("mrOwner"),
    mr_owner_config: h("mrOwnerConfig"),
    report_data: h("reportData"),
    td_attributes: h("tdAttributes"),
    xfam: h("xfam"),
    tee_tcb_svn: h("teeTcbSvn"),
  };
}

const verifiable = allFixtures().filter((f) => f.collateral && f.expected.tee_type === "TDX");

describe("every TDX fixture verifies as its expected.json says, identically to dcap-qvl", () => {
  test.each(verifiable.map((f) => [f.name, f] as const))("%s", async (_n, f) => {
    const at = f.expected.at_unix!;
    const ours = await verifyQuote(f.quote, f.collateral!, { at });
    const theirs = dcapVerdict(f, at);

    expect(ours.ok).toBe(f.expected.ok);
    expect(theirs.ok).toBe(f.expected.ok);
    expect(ours.ok).toBe(theirs.ok);
    expect(ours.status).toBe(theirs.status);
    expect(ours.advisory_ids).toEqual(theirs.advisory_ids);
    expect(ours.status).toBe(f.expected.status);
    expect(ours.advisory_ids).toEqual(f.expected.advisory_ids ?? []);

    const m = dcapMeasurements(f.quote);
    for (const [k, v] of Object.entries(m)) expect(ours.measurements![k as keyof typeof m], k).toBe(v);
    expect(ours.fmspc).toBe(f.expected.fmspc);

    if (!f.expected.ok) {
      expect(f.expected.error).toBe("No matching TCB level found");
      expect(ours.failure).toEqual({ stage: "tcb", code: "no_tcb_level" });
      expect(ours.reason).toMatch(/^No matching TCB level found: PCK SGX TCB components .* FMSPC [0-9a-f]{12}$/);
    } else {
      expect(ours.reason).toBeUndefined();
      expect(ours.tcb?.qe_status).toBe("UpToDate");
    }
  });

  test("parse-only fixture: no collateral covers its PCK certificate (issued 2026-04-15); measurements still reported", () => {
    const f = loadFixture("dstack-lite-v4-parse-only");
    const other = loadFixture("dstack-verifier-v4-uptodate"); // same FMSPC, collateral of 2026-03
    const v = verifyQuoteSync(f.quote, other.collateral!, { at: other.expected.at_unix! });
    expect(v.ok).toBe(false);
    expect(v.failure).toEqual({ stage: "pck_chain", code: "not_yet_valid" });
    expect(v.reason).toMatch(/PCK Certificate.* is not valid before 2026-04-15T00:50:58.000Z/);
    expect(v.measurements?.mrtd).toBe(f.expected.mr_td);
    expect(dcapVerdict({ ...f, collateral: other.collateral }, other.expected.at_unix!).ok).toBe(false);
  });

  test("gcp-cos: the 'intel' TCB matching rule (TEE_TCB_SVN bytes 0-1 left to the module identity) differs", () => {
    const f = loadFixture("gcp-cos-v4-outofdate");
    const strict = verifyQuoteSync(f.quote, f.collateral!, { at: f.expected.at_unix! });
    const intel = verifyQuoteSync(f.quote, f.collateral!, { at: f.expected.at_unix!, tcbMatching: "intel" });
    expect(strict.status).toBe("OutOfDate");
    expect(intel.ok).toBe(true);
    expect(intel.status).toBe("UpToDate");
    expect(intel.tcb?.tdx_module_status).toBe("UpToDate");
  });
});

describe("negative cases, each with its own reason", () => {
  const f = loadFixture("tdx-v4-uptodate");
  const at = f.expected.at_unix!;

  test("collateral expired: one second after the earliest nextUpdate", () => {
    // at_unix is the earliest nextUpdate minus one second (fixture README)
    const v = verifyQuoteSync(f.quote, f.collateral!, { at: at + 2 });
    expect(v.ok).toBe(false);
    expect(v.failure?.stage).toBe("collateral");
    expect(v.failure?.code).toMatch(/expired/);
    expect(v.reason).toMatch(/expired at its nextUpdate/);
    expect(v.status).toBeNull();
  });

  test("certificates expired: long after every certificate's notAfter", () => {
    const v = verifyQuoteSync(f.quote, f.collateral!, { at: Date.parse("2051-01-01T00:00:00Z") / 1000 });
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/expired/);
  });

  test("collateral not yet valid", () => {
    const v = verifyQuoteSync(f.quote, f.collateral!, { at: Date.parse("2019-01-01T00:00:00Z") / 1000 });
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/not valid before|is after/);
  });

  test("SGX quote: not a TDX quote (its signatures and collateral are otherwise valid)", () => {
    const s = loadFixture("sgx-v3-config-sw-hardening");
    const v = verifyQuoteSync(s.quote, s.collateral!, { at: s.expected.at_unix! });
    expect(v.ok).toBe(false);
    expect(v.failure).toEqual({ stage: "parse", code: "not_tdx" });
    expect(v.reason).toBe("not a TDX quote: TEE type 0x00000000 (SGX), version 3");
    // dcap-qvl accepts it as an SGX quote: the one intended divergence.
    expect(dcapVerdict(s, s.expected.at_unix!).ok).toBe(true);
  });

  test("v3 TDX-typed quote: not a TDX quote", () => {
    const q = Buffer.from(f.quote);
    q.writeUInt16LE(3, 0);
    const v = verifyQuoteSync(q, f.collateral!, { at });
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/^not a TDX quote: .*version 3/);
  });

  test("truncated quote", () => {
    const v = verifyQuoteSync(f.quote.subarray(0, 4000), f.collateral!, { at });
    expect(v.ok).toBe(false);
    expect(v.failure).toEqual({ stage: "parse", code: "malformed_quote" });
    expect(v.reason).toMatch(/^quote auth_data_size at offset 632: declares 4300 bytes but only 3364 follow/);
    expect(v.measurements).toBeNull();
  });

  test("collateral for another platform: FMSPC mismatch", () => {
    const other = loadFixture("gcp-cos-v4-outofdate");
    const v = verifyQuoteSync(f.quote, other.collateral!, { at: other.expected.at_unix! });
    expect(v.ok).toBe(false);
    expect(v.failure).toEqual({ stage: "tcb", code: "fmspc_mismatch" });
    expect(v.reason).toBe("TCB info is for FMSPC 00806f050000, the PCK certificate says b0c06f000000");
  });

  test("tampered TCB info text: signature no longer verifies", () => {
    const c = { ...f.collateral!, tcb_info: f.collateral!.tcb_info.replace('"UpToDate"', '"OutOfDate"') };
    const v = verifyQuoteSync(f.quote, c, { at });
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/TCB info signature does not verify/);
  });

  test("tampered QE identity signature", () => {
    const s = f.collateral!.qe_identity_signature;
    const c = { ...f.collateral!, qe_identity_signature: (s[0] === "0" ? "1" : "0") + s.slice(1) };
    expect(verifyQuoteSync(f.quote, c, { at }).reason).toMatch(/QE identity signature does not verify/);
  });

  test("root CA CRL with a flipped signature byte is rejected (its own signature is checked)", () => {
    const crl = Buffer.from(f.collateral!.root_ca_crl, "hex");
    crl[crl.length - 5]! ^= 0x01;
    const v = verifyQuoteSync(f.quote, { ...f.collateral!, root_ca_crl: crl.toString("hex") }, { at });
    expect(v.ok).toBe(false);
    expect(v.failure?.code).toBe("bad_crl");
    expect(v.reason).toMatch(/root CA CRL: signature does not verify/);
  });

  test("debug TDs are refused unless allowed", async () => {
    const pkiF = loadFixture("tdx-v4-uptodate");
    const leafDer = splitPemChain(parseQuote(pkiF.quote).pckChainRaw, "c", true)[0]!;
    const pki = await TestPki.create({
      notBefore: new Date("2020-01-01T00:00:00Z"),
      notAfter: new Date("2040-01-01T00:00:00Z"),
      sgxExtension: parseCertificate(leafDer).sgxExtension!,
    });
    const crls = {
      root: await pki.crl("root", { thisUpdate: new Date(at * 1000 - 86400e3), nextUpdate: new Date(at * 1000 + 86400e3) }),
      pck: await pki.crl("pckCa", { thisUpdate: new Date(at * 1000 - 86400e3), nextUpdate: new Date(at * 1000 + 86400e3) }),
    };
    const coll = await pki.collateral(pkiF.collateral!, crls);
    const debugQuote = await pki.resignQuote(pkiF.quote, (s) => {
      s[48 + 120] = 0x01; // td_attributes byte 0: DEBUG
    });
    const v = verifyQuoteSync(debugQuote, coll, { at, rootCaDer: pki.rootDer });
    expect(v.ok).toBe(false);
    expect(v.failure?.stage).toBe("policy");
    expect(v.reason).toMatch(/debug mode/);
    expect(verifyQuoteSync(debugQuote, coll, { at, rootCaDer: pki.rootDer, allowDebug: true }).ok).toBe(true);
  });
});

describe("CRLs and revocation with a test PKI (Intel's keys cannot sign test CRLs)", () => {
  const f = loadFixture("tdx-v4-uptodate");
  const at = f.expected.at_unix!;
  const atDate = new Date(at * 1000);
  const day = 86400e3;
  let pki: TestPki;
  let quote: Buffer;
  let goodCrls: { root: Buffer; pck: Buffer };
  const window = { thisUpdate: new Date(atDate.getTime() - day), nextUpdate: new Date(atDate.getTime() + day) };

  beforeAll(async () => {
    const leafDer = splitPemChain(parseQuote(f.quote).pckChainRaw, "c", true)[0]!;
    pki = await TestPki.create({
      notBefore: new Date("2020-01-01T00:00:00Z"),
      notAfter: new Date("2040-01-01T00:00:00Z"),
      sgxExtension: parseCertificate(leafDer).sgxExtension!,
    });
    quote = await pki.resignQuote(f.quote);
    goodCrls = { root: await pki.crl("root", window), pck: await pki.crl("pckCa", window) };
  });

  const run = async (crls: { root: Buffer; pck: Buffer }, when = at) =>
    verifyQuoteSync(quote, await pki.collateral(f.collateral!, crls), { at: when, rootCaDer: pki.rootDer });

  test("baseline: the re-signed quote verifies UpToDate under the test PKI", async () => {
    const v = await run(goodCrls);
    expect(v.reason).toBeUndefined();
    expect(v.ok).toBe(true);
    expect(v.status).toBe("UpToDate");
    expect(v.pck?.serial).toBe("0a0b0c0d");
  });

  test("wrong root CA: everything signed by another root is refused, in both directions", async () => {
    // Intel's quote and collateral while the test root is pinned: the first chain checked is refused.
    const a = verifyQuoteSync(f.quote, f.collateral!, { at, rootCaDer: pki.rootDer });
    expect(a.ok).toBe(false);
    expect(a.failure?.stage).toBe("collateral");
    expect(a.reason).toMatch(/root CA CRL: issued by a different CA/);
    // Collateral valid under the test root, quote chained to Intel's root: the PCK chain is refused.
    const b = verifyQuoteSync(f.quote, await pki.collateral(f.collateral!, goodCrls), { at, rootCaDer: pki.rootDer });
    expect(b.ok).toBe(false);
    expect(b.failure).toEqual({ stage: "pck_chain", code: "untrusted_root" });
    expect(b.reason).toMatch(/chain ends in "CN=Intel SGX Root CA.*not the pinned Intel SGX Root CA/);
    // A fully consistent test-PKI quote + collateral with the default (Intel) pin: refused.
    const c = verifyQuoteSync(quote, await pki.collateral(f.collateral!, goodCrls), { at });
    expect(c.ok).toBe(false);
    expect(c.failure?.stage).toBe("collateral");
    expect(c.reason).toMatch(/Test SGX Root CA|different CA/);
  });

  test("revoked PCK: the PCK CRL lists the leaf's serial", async () => {
    const v = await run({ ...goodCrls, pck: await pki.crl("pckCa", { ...window, revokedSerials: ["0a0b0c0d"] }) });
    expect(v.ok).toBe(false);
    expect(v.failure).toEqual({ stage: "pck_chain", code: "revoked" });
    expect(v.reason).toMatch(/PCK certificate: certificate ".*Test SGX PCK Certificate.*" \(serial 0a0b0c0d\) is revoked/);
  });

  test("revoked PCK CA: the root CA CRL lists the intermediate's serial", async () => {
    const v = await run({ ...goodCrls, root: await pki.crl("root", { ...window, revokedSerials: ["02"] }) });
    expect(v.ok).toBe(false);
    expect(v.failure?.code).toBe("revoked");
  });

  test("revoked TCB signing certificate", async () => {
    const v = await run({ ...goodCrls, root: await pki.crl("root", { ...window, revokedSerials: ["03"] }) });
    expect(v.ok).toBe(false);
    expect(v.failure?.code).toBe("revoked");
    expect(v.reason).toMatch(/TCB Signing/);
  });

  test("a PCK CRL signed by the wrong key is rejected, even though it revokes nothing", async () => {
    const forger = (await webcryptoKeys()).privateKey;
    const v = await run({ ...goodCrls, pck: await pki.crl("pckCa", { ...window, signingKey: forger }) });
    expect(v.ok).toBe(false);
    expect(v.failure?.code).toBe("bad_crl");
    expect(v.reason).toMatch(/PCK CRL: signature does not verify/);
  });

  test("a forged PCK CRL listing a real Intel PCK serial does not verify against Intel's chain", async () => {
    const real = parseCertificate(splitPemChain(parseQuote(f.quote).pckChainRaw, "c", true)[0]!);
    const forged = await pki.crl("pckCa", { ...window, revokedSerials: [real.serialHex] });
    const v = verifyQuoteSync(f.quote, { ...f.collateral!, pck_crl: forged.toString("hex") }, { at });
    expect(v.ok).toBe(false);
    expect(v.failure?.code).toBe("bad_crl");
  });

  test("expired CRL (after its nextUpdate) and CRL not yet valid", async () => {
    const late = await run(goodCrls, at + 2 * 86400);
    expect(late.ok).toBe(false);
    expect(late.reason).toMatch(/expired at its nextUpdate|expired/);
    const early = await run({ ...goodCrls, pck: await pki.crl("pckCa", { thisUpdate: new Date(atDate.getTime() + 3600e3), nextUpdate: window.nextUpdate }) });
    expect(early.ok).toBe(false);
    expect(early.failure?.code).toBe("crl_expired");
    expect(early.reason).toMatch(/PCK CRL: not valid before its thisUpdate/);
  });

  test("CRL without nextUpdate is refused", async () => {
    const noNext = await pki.crl("pckCa", { thisUpdate: window.thisUpdate, nextUpdate: undefined as unknown as Date });
    const v = await run({ ...goodCrls, pck: noNext });
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/nextUpdate/);
  });
});

async function webcryptoKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await globalThis.crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"])) as webcrypto.CryptoKeyPair;
}

describe("warm path", () => {
  test("cached verdicts equal cold verdicts for every fixture, and repeat calls hit the caches", () => {
    const verifier = new QuoteVerifier();
    for (const f of verifiable) {
      const at = f.expected.at_unix!;
      const cold = verifyQuoteSync(f.quote, f.collateral!, { at });
      const w1 = verifier.verifySync(f.quote, f.collateral!, at);
      const w2 = verifier.verifySync(f.quote, f.collateral!, at);
      const strip = (v: Verdict) => ({ ok: v.ok, status: v.status, adv: v.advisory_ids, reason: v.reason, m: v.measurements });
      expect(strip(w1)).toEqual(strip(cold));
      expect(strip(w2)).toEqual(strip(cold));
    }
    expect(verifier.cache.collateral.size).toBeGreaterThan(0);
    expect(verifier.cache.pck.size).toBeGreaterThan(0);
    expect(verifier.cache.qeReports.size).toBeGreaterThan(0);
  });

  test("a cached collateral entry does not outlive its window", () => {
    const f = loadFixture("tdx-v4-uptodate");
    const cache = new VerificationCache();
    const at = f.expected.at_unix!;
    expect(verifyQuoteSync(f.quote, f.collateral!, { at, cache }).ok).toBe(true);
    const late = verifyQuoteSync(f.quote, f.collateral!, { at: at + 2, cache });
    expect(late.ok).toBe(false);
    expect(late.reason).toMatch(/expired/);
  });

  test("a cache primed by one quote does not vouch for a different quote's signature", () => {
    const f = loadFixture("tdx-v4-uptodate");
    const cache = new VerificationCache();
    const at = f.expected.at_unix!;
    expect(verifyQuoteSync(f.quote, f.collateral!, { at, cache }).ok).toBe(true);
    const q = Buffer.from(f.quote);
    q[48 + 520] ^= 0x01; // report_data
    const v = verifyQuoteSync(q, f.collateral!, { at, cache });
    expect(v.ok).toBe(false);
    expect(v.failure?.stage).toBe("quote_signature");
  });
});

describe("never throws", () => {
  test("garbage inputs become verdicts", async () => {
    const f = loadFixture("tdx-v4-uptodate");
    const cases: [Uint8Array, unknown][] = [
      [Buffer.alloc(0), f.collateral],
      [Buffer.from("hello"), f.collateral],
      [f.quote, {}],
      [f.quote, { ...f.collateral, tcb_info: "not json" }],
      [f.quote, { ...f.collateral, pck_crl: "zz" }],
      [f.quote, { ...f.collateral, tcb_info_issuer_chain: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" }],
    ];
    for (const [q, c] of cases) {
      const v = await verifyQuote(q, c as Collateral, { at: f.expected.at_unix! });
      expect(v.ok).toBe(false);
      expect(typeof v.reason).toBe("string");
    }
    expect((await verifyQuote(f.quote, f.collateral!, { at: Number.NaN })).reason).toMatch(/time/);
  });

  test("SGX extension of every fixture leaf decodes", () => {
    for (const f of allFixtures().filter((x) => x.expected.tee_type === "TDX")) {
      const leaf = parseCertificate(splitPemChain(parseQuote(f.quote).pckChainRaw, "c", true)[0]!);
      expect(parseSgxExtension(leaf.sgxExtension!).fmspc.toString("hex")).toBe(f.expected.fmspc);
    }
  });
});
