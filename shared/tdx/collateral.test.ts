import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import {
  CachingCollateralSource,
  CollateralError,
  PcsCollateralSource,
  collateralDigest,
  collateralNextUpdate,
  extractRawJsonValue,
  loadCollateralFile,
  parseCollateralJson,
  type Collateral,
  type FetchFn,
} from "./collateral.js";
import { loadFixture } from "./test/fixtures.js";
import { verifyQuoteSync } from "./verify.js";

const f = loadFixture("tdx-v4-uptodate");
const c = f.collateral!;

/** Test double of a PCCS: answers the v4 API paths from a fixture bundle, records what was asked. */
function fakePccs(bundle: Collateral, opts: { rootCrlAs?: "der" | "hex" } = {}) {
  const calls: string[] = [];
  const res = (body: string | Buffer, headers: Record<string, string> = {}, status = 200) => ({
    ok: status < 400,
    status,
    headers: { get: (n: string) => headers[Object.keys(headers).find((k) => k.toLowerCase() === n.toLowerCase()) ?? ""] ?? null },
    text: async () => body.toString(),
    arrayBuffer: async () => {
      const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
      return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    },
  });
  const fetch: FetchFn = async (url) => {
    calls.push(url);
    const u = new URL(url);
    if (u.pathname === "/tdx/certification/v4/tcb") {
      return res(`{"tcbInfo":${bundle.tcb_info},"signature":"${bundle.tcb_info_signature}"}`, {
        "TCB-Info-Issuer-Chain": encodeURIComponent(bundle.tcb_info_issuer_chain),
      });
    }
    if (u.pathname === "/tdx/certification/v4/qe/identity") {
      return res(`{"enclaveIdentity":${bundle.qe_identity},"signature":"${bundle.qe_identity_signature}"}`, {
        "SGX-Enclave-Identity-Issuer-Chain": encodeURIComponent(bundle.qe_identity_issuer_chain),
      });
    }
    if (u.pathname === "/sgx/certification/v4/pckcrl") {
      return res(Buffer.from(bundle.pck_crl, "hex"), { "SGX-PCK-CRL-Issuer-Chain": encodeURIComponent(bundle.pck_crl_issuer_chain) });
    }
    if (u.pathname === "/sgx/certification/v4/rootcacrl") {
      return res(opts.rootCrlAs === "hex" ? bundle.root_ca_crl : Buffer.from(bundle.root_ca_crl, "hex"));
    }
    return res("not found", {}, 404);
  };
  return { fetch, calls };
}

describe("collateral bundle", () => {
  test("loads the fixture file and validates the shape", async () => {
    const dir = mkdtempSync(join(tmpdir(), "coll-"));
    writeFileSync(join(dir, "c.json"), f.collateralText!);
    const loaded = await loadCollateralFile(join(dir, "c.json"));
    expect(loaded).toEqual(c);
    expect(() => parseCollateralJson("{}")).toThrow(/pck_crl_issuer_chain/);
    expect(() => parseCollateralJson(JSON.stringify({ ...c, pck_crl: "xyz" }))).toThrow(/pck_crl must be hex/);
    expect(() => parseCollateralJson("nope")).toThrow(CollateralError);
  });

  test("digest changes with any field and ignores object identity", () => {
    expect(collateralDigest({ ...c })).toBe(collateralDigest(c));
    expect(collateralDigest({ ...c, tcb_info: c.tcb_info + " " })).not.toBe(collateralDigest(c));
  });

  test("nextUpdate is the earliest of TCB info and QE identity", () => {
    const t = JSON.parse(c.tcb_info).nextUpdate as string;
    const q = JSON.parse(c.qe_identity).nextUpdate as string;
    expect(collateralNextUpdate(c)!.getTime()).toBe(Math.min(Date.parse(t), Date.parse(q)));
  });

  test("extractRawJsonValue returns the signed text byte for byte", () => {
    const body = `{ "signature" : "ab", "tcbInfo" :  ${c.tcb_info} }`;
    expect(extractRawJsonValue(body, "tcbInfo")).toBe(c.tcb_info);
    expect(extractRawJsonValue(`{"x":{"tcbInfo":1},"tcbInfo":{"a":"}\\""}}`, "tcbInfo")).toBe(`{"a":"}\\""}`);
    expect(() => extractRawJsonValue(`{"other":{}}`, "tcbInfo")).toThrow(/no top-level/);
  });
});

describe("PcsCollateralSource against a fake PCCS (no network)", () => {
  test("reassembles the exact bundle, which then verifies the quote", async () => {
    const pccs = fakePccs(c);
    const src = new PcsCollateralSource("https://pccs.test:8081/", { fetch: pccs.fetch });
    const got = await src.get("20a06f000000", "platform");
    expect(got).toEqual(c);
    expect(pccs.calls.sort()).toEqual([
      "https://pccs.test:8081/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
      "https://pccs.test:8081/sgx/certification/v4/rootcacrl",
      "https://pccs.test:8081/tdx/certification/v4/qe/identity",
      "https://pccs.test:8081/tdx/certification/v4/tcb?fmspc=20A06F000000",
    ]);
    expect(verifyQuoteSync(f.quote, got, { at: f.expected.at_unix! }).ok).toBe(true);
  });

  test("a PCCS that serves the root CA CRL as hex text is understood", async () => {
    const src = new PcsCollateralSource("http://127.0.0.1:1", { fetch: fakePccs(c, { rootCrlAs: "hex" }).fetch });
    expect((await src.get("20a06f000000", "processor")).root_ca_crl).toBe(c.root_ca_crl.toLowerCase());
  });

  test("HTTP errors and bad FMSPC are reported", async () => {
    const failing: FetchFn = async () => ({ ok: false, status: 503, headers: { get: () => null }, text: async () => "", arrayBuffer: async () => new ArrayBuffer(0) });
    await expect(new PcsCollateralSource("https://pccs.test", { fetch: failing }).get("20a06f000000", "platform")).rejects.toThrow(/HTTP 503/);
    await expect(new PcsCollateralSource("https://pccs.test", { fetch: failing }).get("zz", "platform")).rejects.toThrow(/FMSPC/);
    expect(() => new PcsCollateralSource("file:///etc")).toThrow(/scheme/);
  });

  test("CachingCollateralSource asks once until nextUpdate, then again", async () => {
    const pccs = fakePccs(c);
    let now = Date.parse(JSON.parse(c.tcb_info).issueDate as string);
    const src = new CachingCollateralSource(new PcsCollateralSource("https://pccs.test", { fetch: pccs.fetch }), { now: () => now });
    await src.get("20a06f000000", "platform");
    await src.get("20A06F000000", "platform");
    expect(pccs.calls.length).toBe(4);
    expect(src.digestOf("20a06f000000", "platform")).toBe(collateralDigest(c));
    now = collateralNextUpdate(c)!.getTime();
    await src.get("20a06f000000", "platform");
    expect(pccs.calls.length).toBe(8);
  });
});

test("Intel PCS base URL takes the root CA CRL from Intel's certificate site", async () => {
  const pccs = fakePccs(c);
  const seen: string[] = [];
  const fetch: FetchFn = async (url, init) => {
    seen.push(url);
    return pccs.fetch(url.replace("https://certificates.trustedservices.intel.com/IntelSGXRootCA.der", "https://x/sgx/certification/v4/rootcacrl"), init);
  };
  await new PcsCollateralSource("https://api.trustedservices.intel.com", { fetch }).get("20a06f000000", "platform");
  expect(seen).toContain("https://certificates.trustedservices.intel.com/IntelSGXRootCA.der");
});
