import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { describe, expect, test } from "vitest";
import { measurementsOf, parseQuote, reportDataFor } from "../../shared/tdx/index.js";
import { loadFixture } from "../../shared/tdx/test/fixtures.js";
import { ImageCatalog } from "../images/image-catalog.js";
import { checkManifest, checkReportData } from "./attestation-service.js";

const f = loadFixture("tdx-v4-uptodate");
const m = measurementsOf(parseQuote(f.quote).report);

describe("checkManifest", () => {
  // The shape images/tools/image-tool.mjs writes: build notes beside the values, null for "not predicted".
  const em = { mrtd: null, rtmr1: null, rtmr1_candidates: { kernel_unmodified: "ab".repeat(48) }, rtmr2: f.expected.rtmr2, events: { rtmr1: [] }, firmware: "OVMF.fd" };

  test("compares only MRTD and RTMR0-2; nulls are unchecked, never a match, and unchecked is not ok", () => {
    const r = checkManifest(m, { id: "cvm-1", expectedMeasurements: em });
    expect(r).toMatchObject({ ok: false, image_id: "cvm-1", checked: 1, unchecked: ["mrtd", "rtmr0", "rtmr1"] });
    expect(r.reason).toMatch(/^image cvm-1: the manifest has no expected value for mrtd, rtmr0, rtmr1, so they were not checked/);
    expect(r.checks?.map((c) => `${c.name}:${c.result}`)).toEqual(["mrtd:unchecked", "rtmr0:unchecked", "rtmr1:unchecked", "rtmr2:matched"]);
  });

  test("the caller's waivers make named unchecked registers acceptable", () => {
    expect(checkManifest(m, { id: "cvm-1", expectedMeasurements: em }, ["mrtd", "rtmr0"]).ok).toBe(false);
    const r = checkManifest(m, { id: "cvm-1", expectedMeasurements: em }, ["mrtd", "rtmr0", "rtmr1"]);
    expect(r).toMatchObject({ ok: true, reason: null, allow_unchecked: ["mrtd", "rtmr0", "rtmr1"] });
    expect(r.checks?.filter((c) => c.waived).map((c) => c.name)).toEqual(["mrtd", "rtmr0", "rtmr1"]);
  });

  test("a differing value fails with its name; a malformed one fails as a manifest error", () => {
    expect(checkManifest(m, { id: "cvm-1", expectedMeasurements: { ...em, rtmr2: "00".repeat(48) } })).toMatchObject({ ok: false, mismatched: ["rtmr2"], reason: expect.stringMatching(/^image cvm-1: measurements differ from the manifest: rtmr2/) });
    expect(checkManifest(m, { id: "cvm-1", expectedMeasurements: { ...em, mrtd: "abc" } })).toMatchObject({ ok: false, reason: expect.stringMatching(/^image cvm-1 manifest: .*48 bytes/) });
  });

  test("no image or no parsed quote: not ok, with the reason", () => {
    expect(checkManifest(m, undefined)).toMatchObject({ ok: false, image_id: null, reason: expect.stringMatching(/not known/) });
    expect(checkManifest(null, { id: "x", expectedMeasurements: em })).toMatchObject({ ok: false, reason: expect.stringMatching(/does not parse/) });
  });
});

test("checkReportData recomputes from nonce and host keys (order and comments do not matter)", () => {
  const nonce = Buffer.alloc(32, 7);
  const keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmGHkWDnb6W3Ssd8p8cRUzlgPGTd2lkNXCx2n9tJfJP root@guest", "ecdsa-sha2-nistp256 AAAAE2VjZHNh"];
  const rd = reportDataFor(nonce, [keys[1]!, keys[0]!.replace(" root@guest", "")]).toString("hex");
  expect(checkReportData(nonce, keys, rd.toUpperCase())).toEqual({ ok: true, expected: rd, actual: rd, reason: null });
  expect(checkReportData(Buffer.alloc(32, 8), keys, rd).ok).toBe(false);
  expect(checkReportData(nonce, keys, null)).toMatchObject({ ok: false, actual: null });
});

test("ImageCatalog.manifestOf: the current image, a sibling by id, nothing for unknown or path-like ids", async () => {
  const root = mkdtempSync(join(tmpdir(), "cvm-images-"));
  try {
    for (const id of ["cvm-a", "cvm-b"]) {
      mkdirSync(join(root, id));
      writeFileSync(join(root, id, "manifest.json"), JSON.stringify({ image_id: id, expected_measurements: { rtmr2: id } }));
    }
    symlinkSync(join(root, "cvm-b"), join(root, "current"));
    const cat = new ImageCatalog({ dir: join(root, "current"), logger: pino({ level: "silent" }) });
    expect((await cat.manifestOf("cvm-b"))?.expected_measurements).toEqual({ rtmr2: "cvm-b" });
    expect((await cat.manifestOf("cvm-a"))?.image_id).toBe("cvm-a");
    expect(await cat.manifestOf("cvm-zzz")).toBeNull();
    expect(await cat.manifestOf("../cvm-a")).toBeNull();
    expect(await cat.manifestOf("..")).toBeNull();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
