import { describe, expect, test } from "vitest";
import { NotTdxQuoteError, QuoteFormatError, parseQuote, MAX_QUOTE_BYTES } from "./quote.js";
import { parseCertificate, parseSgxExtension, splitPemChain } from "./pck.js";
import { allFixtures, loadFixture } from "./test/fixtures.js";

const tdxFixtures = allFixtures().filter((f) => f.expected.tee_type === "TDX");

describe("parseQuote on every TDX fixture", () => {
  test.each(tdxFixtures.map((f) => [f.name, f] as const))("%s: fields equal the oracle's parse", (_name, f) => {
    const q = parseQuote(f.quote);
    const e = f.expected;
    const hex = (b: Buffer | undefined) => b?.toString("hex");
    expect(q.header.version).toBe(e.version);
    expect(q.header.attestationKeyType).toBe(e.attestation_key_type);
    expect(q.header.teeType).toBe(0x81);
    expect(q.header.qeSvn).toBe(e.qe_svn);
    expect(q.header.pceSvn).toBe(e.pce_svn);
    expect(hex(q.header.qeVendorId)).toBe(e.qe_vendor_id);
    expect(hex(q.header.userData)).toBe(e.user_data);
    expect(q.report.kind).toBe(e.report_type);
    if (e.version === 5) expect(q.bodyType).toBe(e.body_type);
    const r = q.report;
    expect({
      tee_tcb_svn: hex(r.teeTcbSvn),
      mr_seam: hex(r.mrSeam),
      mr_signer_seam: hex(r.mrSignerSeam),
      seam_attributes: hex(r.seamAttributes),
      td_attributes: hex(r.tdAttributes),
      xfam: hex(r.xfam),
      mr_td: hex(r.mrTd),
      mr_config_id: hex(r.mrConfigId),
      mr_owner: hex(r.mrOwner),
      mr_owner_config: hex(r.mrOwnerConfig),
      rtmr0: hex(r.rtmr[0]),
      rtmr1: hex(r.rtmr[1]),
      rtmr2: hex(r.rtmr[2]),
      rtmr3: hex(r.rtmr[3]),
      report_data: hex(r.reportData),
    }).toEqual({
      tee_tcb_svn: e.tee_tcb_svn,
      mr_seam: e.mr_seam,
      mr_signer_seam: e.mr_signer_seam,
      seam_attributes: e.seam_attributes,
      td_attributes: e.td_attributes,
      xfam: e.xfam,
      mr_td: e.mr_td,
      mr_config_id: e.mr_config_id,
      mr_owner: e.mr_owner,
      mr_owner_config: e.mr_owner_config,
      rtmr0: e.rtmr0,
      rtmr1: e.rtmr1,
      rtmr2: e.rtmr2,
      rtmr3: e.rtmr3,
      report_data: e.report_data,
    });
    if (e.report_type === "td15") {
      expect(hex(r.teeTcbSvn2)).toBe(e.tee_tcb_svn2);
      expect(hex(r.mrServiceTd)).toBe(e.mr_servicetd);
    }
    expect(q.layout.signedLength).toBe(e.signed_length);
    expect(q.layout.authDataSize).toBe(e.auth_data_size);
    expect(q.layout.parsedLength).toBe(e.parsed_length);
    expect(q.layout.trailingBytes).toBe(e.trailing_bytes);
    expect(q.signedData.length).toBe(e.signed_length);
    expect(q.pckChainRaw.length).toBe(e.pck_chain_bytes);
    expect(q.pckChainRaw[q.pckChainRaw.length - 1] === 0).toBe(e.pck_chain_ends_with_nul);

    const certs = splitPemChain(q.pckChainRaw, "chain", true);
    expect(certs.length).toBe(e.pck_chain_certs);
    const leaf = parseCertificate(certs[0]!);
    const sgx = parseSgxExtension(leaf.sgxExtension!);
    expect(sgx.fmspc.toString("hex")).toBe(e.fmspc);
    expect(sgx.cpuSvn.toString("hex")).toBe(e.pck_cpu_svn);
    expect(sgx.pceSvn).toBe(e.pck_pce_svn);
    expect(Buffer.from(sgx.sgxTcbComponents).toString("hex")).toBe(e.pck_cpu_svn);
  });

  test("signed region never includes trailing bytes: changing them leaves every parsed field equal", () => {
    for (const f of tdxFixtures.filter((x) => x.expected.trailing_bytes as number > 0)) {
      const a = parseQuote(f.quote);
      const mutated = Buffer.from(f.quote);
      for (let i = a.layout.parsedLength; i < mutated.length; i++) mutated[i] = 0xa5;
      const b = parseQuote(mutated);
      expect(b.signedData.equals(a.signedData)).toBe(true);
      expect(b.qeReportRaw.equals(a.qeReportRaw)).toBe(true);
      expect(b.pckChainRaw.equals(a.pckChainRaw)).toBe(true);
    }
  });
});

describe("parseQuote rejects bad input precisely", () => {
  const base = loadFixture("tdx-v4-uptodate").quote;
  const v5 = loadFixture("go-tdx-guest-v5-uptodate").quote;

  test("every truncation of a quote (no trailing padding) is rejected with field and offset", () => {
    let n = 0;
    for (let len = 0; len < v5.length; len += len < 800 ? 1 : 7) {
      expect(() => parseQuote(v5.subarray(0, len)), `length ${len}`).toThrow(QuoteFormatError);
      n++;
    }
    console.log(`truncations rejected: ${n}`);
    try {
      parseQuote(v5.subarray(0, 1000));
    } catch (e) {
      expect(e).toBeInstanceOf(QuoteFormatError);
      expect((e as QuoteFormatError).field).toBe("auth_data_size");
      expect((e as QuoteFormatError).offset).toBe(702);
      expect((e as Error).message).toMatch(/truncated/);
    }
  });

  test("SGX v3 quote: not a TDX quote", () => {
    const sgx = loadFixture("sgx-v3-config-sw-hardening").quote;
    expect(() => parseQuote(sgx)).toThrow(NotTdxQuoteError);
    expect(() => parseQuote(sgx)).toThrow(/not a TDX quote: TEE type 0x00000000 \(SGX\), version 3/);
  });

  test("a v3 header on a TDX quote: not a TDX quote", () => {
    const q = Buffer.from(base);
    q.writeUInt16LE(3, 0);
    expect(() => parseQuote(q)).toThrow(/not a TDX quote: .*version 3/);
  });

  test("oversized buffer", () => {
    const big = Buffer.concat([base, Buffer.alloc(MAX_QUOTE_BYTES)]);
    expect(() => parseQuote(big)).toThrow(/oversized/);
  });

  test("auth data size larger than the buffer", () => {
    const q = Buffer.from(base);
    q.writeUInt32LE(q.length, 632);
    expect(() => parseQuote(q)).toThrow(/auth_data_size at offset 632: declares/);
  });

  test("auth data size that swallows padding leaves nested sizes inconsistent", () => {
    const q = Buffer.from(base);
    q.writeUInt32LE(q.readUInt32LE(632) + 70, 632);
    expect(() => parseQuote(q)).toThrow(/certification_data.size/);
  });

  test("v5 body descriptor: SGX body type and wrong size", () => {
    const q = Buffer.from(v5);
    q.writeUInt16LE(1, 48);
    expect(() => parseQuote(q)).toThrow(/body.type at offset 48: body type 1 is an SGX enclave report/);
    const r = Buffer.from(v5);
    r.writeUInt32LE(584, 50);
    expect(() => parseQuote(r)).toThrow(/body.size at offset 50/);
  });

  test("certification data types other than 6 / 5", () => {
    const q = Buffer.from(base);
    q.writeUInt16LE(5, 636 + 128);
    expect(() => parseQuote(q)).toThrow(/certification_data.type at offset 764: expected 6/);
    const r = Buffer.from(base);
    const innerAt = 636 + 128 + 6 + 384 + 64 + 2 + 32;
    r.writeUInt16LE(3, innerAt);
    expect(() => parseQuote(r)).toThrow(/pck_cert_data.type/);
  });

  test("unsupported attestation key type", () => {
    const q = Buffer.from(base);
    q.writeUInt16LE(3, 2);
    expect(() => parseQuote(q)).toThrow(/attestation key type 3/);
  });
});
