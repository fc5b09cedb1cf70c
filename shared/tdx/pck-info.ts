/**
 * What a collateral source needs to know about a quote before verifying it: the FMSPC (platform
 * family; selects the TCB info) and the CA that issued the PCK certificate (selects the PCK CRL).
 * Read from the PCK leaf certificate carried in the quote, without checking anything: the values only
 * pick which collateral to fetch, and verification then checks that collateral against the quote.
 */
import type { PckCaType } from "./collateral.js";
import { PkiError, parseCertificate, parseSgxExtension, splitPemChain } from "./pck.js";
import { parseQuote } from "./quote.js";

export interface PckInfo {
  /** 6 bytes, lowercase hex. */
  fmspc: string;
  ca: PckCaType;
  /** 2 bytes, lowercase hex. */
  pce_id: string;
}

/**
 * FMSPC and PCK CA type of a TDX quote. Throws QuoteFormatError / NotTdxQuoteError when the quote does
 * not parse, and PkiError when its PCK leaf is malformed, lacks the SGX extension, or was issued by a
 * CA that is neither the PCK Platform CA nor the PCK Processor CA.
 */
export function pckInfoOf(quote: Uint8Array): PckInfo {
  const q = parseQuote(quote);
  const leaf = parseCertificate(splitPemChain(q.pckChainRaw, "PCK certificate chain", true)[0]!, "PCK certificate");
  if (!leaf.sgxExtension) throw new PkiError("bad_extension", "PCK certificate lacks the Intel SGX extension");
  const sgx = parseSgxExtension(leaf.sgxExtension);
  const issuer = leaf.issuer;
  const ca: PckCaType | undefined = /PCK Platform CA/i.test(issuer) ? "platform" : /PCK Processor CA/i.test(issuer) ? "processor" : undefined;
  if (!ca) throw new PkiError("bad_certificate", `PCK certificate issuer "${issuer}" is neither the PCK Platform CA nor the PCK Processor CA`);
  return { fmspc: sgx.fmspc.toString("hex"), ca, pce_id: sgx.pceId.toString("hex") };
}
