import { describe, expect, test } from "vitest";
import { parseCertificate, splitPemChain } from "./pck.js";
import { pckInfoOf } from "./pck-info.js";
import { NotTdxQuoteError, QuoteFormatError } from "./quote.js";
import { allFixtures, loadFixture } from "./test/fixtures.js";

const tdx = allFixtures().filter((f) => f.expected.tee_type === "TDX");

describe("pckInfoOf", () => {
  test.each(tdx.map((f) => [f.name, f] as const))("%s: FMSPC as the oracle read it, CA as the collateral's PCK CRL issuer", (_n, f) => {
    const info = pckInfoOf(f.quote);
    expect(info.fmspc).toBe(f.expected.fmspc);
    expect(info.pce_id).toMatch(/^[0-9a-f]{4}$/);
    if (f.collateral) {
      const crlIssuer = parseCertificate(splitPemChain(f.collateral.pck_crl_issuer_chain, "c", false)[0]!);
      expect(crlIssuer.subject).toContain(info.ca === "platform" ? "PCK Platform CA" : "PCK Processor CA");
    }
  });

  test("an SGX quote, a truncated quote and noise are refused with the parser's errors", () => {
    expect(() => pckInfoOf(loadFixture("sgx-v3-config-sw-hardening").quote)).toThrow(NotTdxQuoteError);
    expect(() => pckInfoOf(loadFixture("tdx-v4-uptodate").quote.subarray(0, 700))).toThrow(QuoteFormatError);
    expect(() => pckInfoOf(Buffer.from("hello world"))).toThrow(QuoteFormatError);
  });
});
