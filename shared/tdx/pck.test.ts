import { describe, expect, test } from "vitest";
import { intelRootCa, parseCertificate, splitPemChain, PkiError } from "./pck.js";
import { parseQuote } from "./quote.js";
import { INTEL_SGX_ROOT_CA_SHA256 } from "./root-ca.js";
import { loadFixture } from "./test/fixtures.js";
import { readFileSync } from "node:fs";
import { FIXTURES_DIR } from "./test/fixtures.js";

const chain = parseQuote(loadFixture("tdx-v4-uptodate").quote).pckChainRaw;

describe("PEM chains", () => {
  test("the embedded root is Intel's (pinned digest, same DER as the fixture file)", () => {
    const root = intelRootCa();
    expect(root.sha256).toBe(INTEL_SGX_ROOT_CA_SHA256);
    expect(root.der.equals(readFileSync(`${FIXTURES_DIR}/intel-root-ca/IntelSGXRootCA.der`))).toBe(true);
    expect(root.isCa).toBe(true);
    expect(root.subject).toMatch(/Intel SGX Root CA/);
  });

  test("strict parsing accepts the quote's chain with and without the NUL", () => {
    expect(splitPemChain(chain, "c", true)).toHaveLength(3);
    expect(splitPemChain(chain.subarray(0, chain.length - 1), "c", true)).toHaveLength(3);
  });

  test("strict parsing refuses whitespace variants, stray bytes and non-canonical base64", () => {
    const text = chain.toString("latin1");
    const variants = [
      text.replace("\n", "\r\n"),
      text.replace("\n", "\v"),
      text.replace("-----END CERTIFICATE-----\n", "-----END CERTIFICATE-----\n\n"),
      text + "\0",
      " " + text,
      text.slice(0, -1) + "x",
    ];
    for (const v of variants) expect(() => splitPemChain(Buffer.from(v, "latin1"), "c", true)).toThrow(PkiError);
    // "...qI=" ends the root: I = 8 (0b001000); "J" decodes to the same byte but is not canonical
    const nonCanonical = text.replace("qI=\n-----END", "qJ=\n-----END");
    expect(nonCanonical).not.toBe(text);
    expect(() => splitPemChain(Buffer.from(nonCanonical, "latin1"), "c", false)).toThrow(/non-canonical/);
  });

  test("lenient parsing (collateral headers) tolerates CRLF and blank lines", () => {
    const text = chain.toString("latin1").replace(/\0$/, "").replace(/\n/g, "\r\n") + "\r\n\r\n";
    expect(splitPemChain(text, "c", false)).toHaveLength(3);
  });

  test("certificates with trailing garbage or a changed outer algorithm are refused", () => {
    const der = splitPemChain(chain, "c", true)[1]!;
    expect(() => parseCertificate(Buffer.concat([der, Buffer.from([0])]))).toThrow(/trailing/);
    const i = der.lastIndexOf(Buffer.from("2a8648ce3d040302", "hex"));
    const changed = Buffer.from(der);
    changed[i + 7] = 0x03; // ecdsa-with-SHA384 in the outer AlgorithmIdentifier only
    expect(() => parseCertificate(changed)).toThrow(/signature algorithm/);
  });
});
