import { mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { CollateralError, type CollateralSource, type PckInfo } from "../../shared/tdx/index.js";
import { loadFixture } from "../../shared/tdx/test/fixtures.js";
import { ConfigError, loadConfig } from "../config.js";
import { buildCollateralProvider, CollateralBundleFile, ConfiguredCollateralProvider, NO_COLLATERAL_SOURCE, parseCollateralBundle } from "./collateral-provider.js";

const v4 = loadFixture("tdx-v4-uptodate");
const gcp = loadFixture("gcp-cos-v4-outofdate");
const tempDir = () => {
  const path = mkdtempSync(join(tmpdir(), "cvm-attest-"));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
};
const pck = (fmspc: string): PckInfo => ({ fmspc, ca: "platform", pce_id: "0000" });

describe("collateral bundles", () => {
  test("one collateral.json object is indexed by the FMSPC of its own TCB info", () => {
    const m = parseCollateralBundle(v4.collateralText!);
    expect([...m.keys()]).toEqual(["b0c06f000000"]);
    expect(m.get("b0c06f000000")).toEqual(v4.collateral);
  });

  test("a map FMSPC → collateral; keys in any case", () => {
    const m = parseCollateralBundle(JSON.stringify({ B0C06F000000: v4.collateral, "00806f050000": gcp.collateral }));
    expect([...m.keys()].sort()).toEqual(["00806f050000", "b0c06f000000"]);
  });

  test.each([
    ["not JSON", "{", /not valid JSON/],
    ["an array", "[]", /JSON object/],
    ["an empty map", "{}", /no collateral/],
    ["a key that is not an FMSPC", JSON.stringify({ tdx: v4.collateral }), /not an FMSPC/],
    ["a key that disagrees with its bundle", JSON.stringify({ "00806f050000": v4.collateral }), /key 00806f050000 holds collateral for FMSPC b0c06f000000/],
    ["a bundle missing a field", JSON.stringify({ ...v4.collateral, qe_identity: undefined }), /qe_identity/],
    ["a TCB info without fmspc", JSON.stringify({ ...v4.collateral, tcb_info: "{}" }), /no 6-byte hex fmspc/],
  ])("refuses %s", (_n, text, re) => {
    expect(() => parseCollateralBundle(text)).toThrow(CollateralError);
    expect(() => parseCollateralBundle(text)).toThrow(re);
  });
});

describe("CollateralBundleFile", () => {
  test("re-reads a replaced file; a bad replacement keeps the previous bundle", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "c.json");
      writeFileSync(path, v4.collateralText!);
      const f = new CollateralBundleFile(path);
      await f.load();
      expect(await f.get("b0c06f000000")).toEqual(v4.collateral);
      expect(await f.get("00806f050000")).toBeUndefined();

      writeFileSync(path, JSON.stringify({ "00806f050000": gcp.collateral }));
      utimesSync(path, new Date(), new Date(Date.now() + 5000));
      expect(await f.get("00806f050000")).toEqual(gcp.collateral);
      expect(await f.get("b0c06f000000")).toBeUndefined();

      writeFileSync(path, "{ truncated");
      utimesSync(path, new Date(), new Date(Date.now() + 10_000));
      expect(await f.get("00806f050000")).toEqual(gcp.collateral);
    } finally {
      dir.remove();
    }
  });

  test("a missing or malformed file stops start-up with the variable named", async () => {
    const dir = tempDir();
    try {
      await expect(buildCollateralProvider({ collateralFile: join(dir.path, "nope.json"), pccsUrl: null }, { now: Date.now })).rejects.toThrow(/CVM_COLLATERAL_FILE=.*nope\.json/);
      writeFileSync(join(dir.path, "bad.json"), "[1]");
      await expect(buildCollateralProvider({ collateralFile: join(dir.path, "bad.json"), pccsUrl: null }, { now: Date.now })).rejects.toThrow(/CVM_COLLATERAL_FILE=.*bad\.json: must be a JSON object/);
    } finally {
      dir.remove();
    }
  });
});

describe("ConfiguredCollateralProvider", () => {
  test("nothing configured: the fixed reason", async () => {
    const p = await buildCollateralProvider({ collateralFile: null, pccsUrl: null }, { now: Date.now });
    expect(p.configured).toBe(false);
    expect(await p.collateralFor(pck("b0c06f000000"))).toEqual({ collateral: null, reason: NO_COLLATERAL_SOURCE });
  });

  test("file first, then the PCCS with the quote's FMSPC and CA; both misses are explained", async () => {
    const dir = tempDir();
    try {
      const path = join(dir.path, "c.json");
      writeFileSync(path, v4.collateralText!);
      const file = new CollateralBundleFile(path);
      await file.load();
      const asked: string[] = [];
      const pccs: CollateralSource = {
        get: async (fmspc, ca) => {
          asked.push(`${fmspc}/${ca}`);
          if (fmspc === "00806f050000") return gcp.collateral!;
          throw new CollateralError("GET https://pccs.test/... answered HTTP 404");
        },
      };
      const p = new ConfiguredCollateralProvider({ file, pccs });
      expect(await p.collateralFor(pck("b0c06f000000"))).toEqual({ collateral: v4.collateral, source: "file" });
      expect(asked).toEqual([]);
      expect(await p.collateralFor({ ...pck("00806f050000"), ca: "processor" })).toEqual({ collateral: gcp.collateral, source: "pccs" });
      expect(asked).toEqual(["00806f050000/processor"]);
      const miss = await p.collateralFor(pck("90c06f000000"));
      expect(miss.collateral).toBeNull();
      if (!miss.collateral) {
        expect(miss.reason).toBe(
          "CVM_COLLATERAL_FILE has no collateral for FMSPC 90c06f000000 (it covers b0c06f000000); " +
            "collateral for FMSPC 90c06f000000 (platform CA) is unavailable from CVM_PCCS_URL: GET https://pccs.test/... answered HTTP 404",
        );
      }
    } finally {
      dir.remove();
    }
  });
});

describe("configuration", () => {
  test("CVM_COLLATERAL_FILE is resolved against the working directory; CVM_PCCS_URL must be http(s)", () => {
    const c = loadConfig({ CVM_COLLATERAL_FILE: "etc/collateral.json", CVM_PCCS_URL: "https://pccs.example:8081/" }, "/srv/cvm");
    expect(c.attestation).toEqual({ collateralFile: "/srv/cvm/etc/collateral.json", pccsUrl: "https://pccs.example:8081/", acceptTcbStatuses: ["UpToDate"] });
    expect(loadConfig({}).attestation).toEqual({ collateralFile: null, pccsUrl: null, acceptTcbStatuses: ["UpToDate"] });
    for (const bad of ["pccs.example:8081", "ftp://pccs.example", "not a url"]) {
      expect(() => loadConfig({ CVM_PCCS_URL: bad }), bad).toThrow(ConfigError);
    }
  });

  test("CVM_ACCEPT_TCB_STATUS: a comma list of TCB statuses; unknown names and Revoked stop start-up naming the variable", () => {
    expect(loadConfig({ CVM_ACCEPT_TCB_STATUS: "OutOfDate,UpToDate" }).attestation.acceptTcbStatuses).toEqual(["UpToDate", "OutOfDate"]);
    expect(() => loadConfig({ CVM_ACCEPT_TCB_STATUS: "UpToDate,Stale" })).toThrow(/^CVM_ACCEPT_TCB_STATUS: unknown TCB status "Stale"/);
    expect(() => loadConfig({ CVM_ACCEPT_TCB_STATUS: "Revoked" })).toThrow(ConfigError);
  });
});
