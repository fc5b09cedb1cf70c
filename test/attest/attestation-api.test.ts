import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../host/clock.js";
import { NO_COLLATERAL_SOURCE } from "../../host/attest/index.js";
import { eventDigest, QuoteVerifier, replayRtmr, reportDataFor, type Collateral } from "../../shared/tdx/index.js";
import { allFixtures, loadFixture, type Fixture } from "../../shared/tdx/test/fixtures.js";
import { fixtureQuoter } from "../../shared/tdx/test/test-pki.js";
import type { Rtmr3Event } from "../../shared/protocol/messages.js";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";

const ED = sshKeyPair("ed25519").public;
const post = (body: unknown) => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
const NONCE = "a1".repeat(32);
const at = (f: Fixture) => new Date(f.expected.at_unix! * 1000);
const imageOf = (f: Fixture) => ({
  id: "cvm-test-image",
  expectedMeasurements: { mrtd: f.expected.mr_td, rtmr0: f.expected.rtmr0, rtmr1: f.expected.rtmr1, rtmr2: f.expected.rtmr2, notes: "ignored" },
});

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function readyInstance(d: TestDaemon, key: string): Promise<string> {
  const created = await d.fetch("/v1/instances", { key, ...post({ public_key: ED }) });
  expect(created.status).toBe(202);
  const name = created.body.data.name as string;
  const r = await until(() => d.fetch(`/v1/instances/${name}`, { key }), (x) => x.body.data.status === "ready");
  expect(r.body.data.status).toBe("ready");
  return name;
}

async function quoteCounts(d: TestDaemon): Promise<Record<string, number>> {
  const text = await d.metrics.text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^cvm_quote_verifications_total\{verdict="(\w+)"\} (\d+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** Test double of a PCCS on 127.0.0.1: PCS v4 paths answered from fixture bundles by FMSPC; records requests. */
async function fakePccs(bundles: Record<string, Collateral>): Promise<{ url: string; calls: string[]; server: Server }> {
  const calls: string[] = [];
  const server = createServer((req, res) => {
    calls.push(req.url!);
    const u = new URL(req.url!, "http://x");
    const any = Object.values(bundles)[0]!;
    const send = (status: number, body: string | Buffer, headers: Record<string, string> = {}) => {
      res.writeHead(status, headers);
      res.end(body);
    };
    if (u.pathname === "/tdx/certification/v4/tcb") {
      const b = bundles[(u.searchParams.get("fmspc") ?? "").toLowerCase()];
      if (!b) return send(404, "no such fmspc");
      return send(200, `{"tcbInfo":${b.tcb_info},"signature":"${b.tcb_info_signature}"}`, { "TCB-Info-Issuer-Chain": encodeURIComponent(b.tcb_info_issuer_chain) });
    }
    if (u.pathname === "/tdx/certification/v4/qe/identity") {
      return send(200, `{"enclaveIdentity":${any.qe_identity},"signature":"${any.qe_identity_signature}"}`, {
        "SGX-Enclave-Identity-Issuer-Chain": encodeURIComponent(any.qe_identity_issuer_chain),
      });
    }
    if (u.pathname === "/sgx/certification/v4/pckcrl") {
      return send(200, Buffer.from(any.pck_crl, "hex"), { "SGX-PCK-CRL-Issuer-Chain": encodeURIComponent(any.pck_crl_issuer_chain) });
    }
    if (u.pathname === "/sgx/certification/v4/rootcacrl") return send(200, Buffer.from(any.root_ca_crl, "hex"));
    send(404, "not found");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, calls, server };
}

const tdxV4 = loadFixture("tdx-v4-uptodate");
const gcp = loadFixture("gcp-cos-v4-outofdate");
const near = loadFixture("dcap-qvl-near-v4-uptodate");

describe("attestation API: Intel fixtures, collateral from a bundle file and a PCCS", () => {
  const dir = tempDir();
  const driver = new FakeDriver();
  const clock = new ManualClock(at(gcp));
  let d: TestDaemon;
  let pccs: Awaited<ReturnType<typeof fakePccs>>;
  let acme: { slug: string; apiKey: string };
  let globex: { slug: string; apiKey: string };
  let name: string;

  beforeAll(async () => {
    // A map bundle: one collateral per FMSPC, as an operator serving two platform families would ship it.
    const file = join(dir.path, "collateral-bundle.json");
    writeFileSync(file, JSON.stringify({ [tdxV4.expected.fmspc as string]: tdxV4.collateral, [gcp.expected.fmspc as string]: gcp.collateral }));
    pccs = await fakePccs({ [near.expected.fmspc as string]: near.collateral! });
    d = await startTestDaemon({ dataDir: join(dir.path, "data"), driver, clock, env: { CVM_COLLATERAL_FILE: file, CVM_PCCS_URL: pccs.url } });
    acme = await d.tenant("acme");
    globex = await d.tenant("globex");
    name = await readyInstance(d, acme.apiKey);
  });
  afterAll(async () => {
    await d.close();
    pccs.server.close();
    dir.remove();
  });

  describe("GET /v1/instances/{name}/attestation", () => {
    const bad: Array<[string, string]> = [
      ["missing", ""],
      ["empty", "?nonce="],
      ["odd length", `?nonce=${"a".repeat(33)}`],
      ["not hex", `?nonce=${"zz".repeat(16)}`],
      ["0x prefix", `?nonce=0x${"ab".repeat(16)}`],
      ["15 bytes", `?nonce=${"ab".repeat(15)}`],
      ["65 bytes", `?nonce=${"ab".repeat(65)}`],
      ["given twice", `?nonce=${"ab".repeat(16)}&nonce=${"cd".repeat(16)}`],
    ];
    it.each(bad)("nonce %s → 400 invalid_request naming nonce", async (_, query) => {
      const r = await d.fetch(`/v1/instances/${name}/attestation${query}`, { key: acme.apiKey });
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe("invalid_request");
      expect(r.body.error.param).toBe("nonce");
    });

    it("accepts nonces of exactly 16 and 64 bytes, upper-case hex too", async () => {
      for (const nonce of ["AB".repeat(16), "cd".repeat(64)]) {
        const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${nonce}`, { key: acme.apiKey });
        expect(r.status, nonce).toBe(200);
        expect(r.body.data.nonce).toBe(nonce.toLowerCase());
      }
    });

    it("needs a key; another tenant's instance and unknown names are not_found", async () => {
      expect((await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`)).status).toBe(401);
      for (const [key, n] of [[globex.apiKey, name], [acme.apiKey, "zzzzzzzz"], [acme.apiKey, "NOT-A-NAME"]] as const) {
        const r = await d.fetch(`/v1/instances/${n}/attestation?nonce=${NONCE}`, { key });
        expect(r.status, n).toBe(404);
        expect(r.body.error.code).toBe("not_found");
      }
    });

    it("an instance that is not ready is a conflict", async () => {
      driver.readyAfterMs = 60_000;
      const created = await d.fetch("/v1/instances", { key: acme.apiKey, ...post({ public_key: ED }) });
      driver.readyAfterMs = 0;
      const slow = created.body.data.name as string;
      const r = await d.fetch(`/v1/instances/${slow}/attestation?nonce=${NONCE}`, { key: acme.apiKey });
      expect(r.status).toBe(409);
      expect(r.body.error).toMatchObject({ code: "conflict", message: expect.stringMatching(/provisioning; attestation needs a ready instance/) });
      await d.fetch(`/v1/instances/${slow}`, { key: acme.apiKey, method: "DELETE" });
      const gone = await d.fetch(`/v1/instances/${slow}/attestation?nonce=${NONCE}`, { key: acme.apiKey });
      expect(gone.status).toBe(409);
    });

    it("without TDX: 200, available=false with the agent's reason and event log, verdict null, no quote", async () => {
      driver.quoteFor = null;
      driver.eventLog = [{ imr: 3, digest: eventDigest("openclaw-tree", '{"digest":"sha256:00"}').toString("hex"), event_type: "openclaw-tree", event: '{"digest":"sha256:00"}' }];
      const before = await quoteCounts(d);
      const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key: acme.apiKey });
      driver.eventLog = [];
      expect(r.status).toBe(200);
      expect(r.body.data).toEqual({
        name,
        nonce: NONCE,
        available: false,
        reason: "test double: no TDX",
        event_log: [expect.objectContaining({ event_type: "openclaw-tree" })],
        measurements: null,
        verdict: null,
      });
      expect(await quoteCounts(d)).toEqual(before);
    });

    it("gcp-cos fixture quote at its pinned time: OutOfDate is not accepted by default (same policy as cvm-verify); REPORTDATA mismatch reported", async () => {
      clock.set(at(gcp));
      driver.quoteFor = () => gcp.quote;
      driver.image = imageOf(gcp);
      const before = await quoteCounts(d);
      const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key: acme.apiKey });
      expect(r.status).toBe(200);
      const data = r.body.data;
      expect(data.available).toBe(true);
      expect(Buffer.from(data.quote, "base64").equals(gcp.quote)).toBe(true);
      expect(data.measurements.mrtd).toBe(gcp.expected.mr_td);
      expect(data.host_keys).toEqual(driver.hostKeys);
      const v = data.verdict;
      expect(v.status).toBe(gcp.expected.status);
      expect(v.advisory_ids).toEqual(gcp.expected.advisory_ids);
      expect(gcp.expected).toMatchObject({ ok: true, status: "OutOfDate" }); // DCAP-valid: only the policy refuses it
      expect(v.accepted_statuses).toEqual(["UpToDate"]);
      expect(v.checks.quote).toEqual({
        ok: false,
        reason: "TCB status OutOfDate is not accepted (accepted: UpToDate); the operator accepts more with CVM_ACCEPT_TCB_STATUS",
        failure: { stage: "policy", code: "tcb_status_not_accepted" },
      });
      expect(v.collateral_source).toBe("file");
      expect(v.at).toBe(at(gcp).toISOString());
      // A real quote cannot carry REPORTDATA over our nonce: the host recomputes and says so.
      const expected = reportDataFor(Buffer.from(NONCE, "hex"), driver.hostKeys).toString("hex");
      expect(v.checks.report_data).toEqual({ ok: false, expected, actual: gcp.expected.report_data, agent_reported: expected, reason: expect.stringMatching(/REPORTDATA is not SHA-512/) });
      expect(v.checks.measurements).toMatchObject({ ok: true, image_id: "cvm-test-image", checked: 4, mismatched: [], unchecked: [] });
      expect(v.ok).toBe(false);
      expect(v.reason).toMatch(/^quote: TCB status OutOfDate is not accepted/);
      expect((await quoteCounts(d)).rejected).toBe(before.rejected! + 1);
    });

    it("tdx-v4 fixture quote: UpToDate; an empty event log replays to its all-zero RTMR3; a wrong manifest value is named", async () => {
      clock.set(at(tdxV4));
      driver.quoteFor = () => tdxV4.quote;
      driver.image = { id: "img-2", expectedMeasurements: { ...imageOf(tdxV4).expectedMeasurements, rtmr1: "11".repeat(48) } };
      const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key: acme.apiKey });
      const v = r.body.data.verdict;
      expect(v.status).toBe("UpToDate");
      expect(v.advisory_ids).toEqual([]);
      expect(v.checks.quote.ok).toBe(true);
      expect(v.checks.event_log).toMatchObject({ ok: true, events: 0, expected: "00".repeat(48) });
      expect(v.checks.measurements).toMatchObject({ ok: false, image_id: "img-2", mismatched: ["rtmr1"], reason: expect.stringMatching(/rtmr1/) });
      expect(r.body.data.image_id).toBe("img-2");
    });

    it("verifies at the server's clock: past the collateral's nextUpdate the quote check fails", async () => {
      clock.set(new Date(at(tdxV4).getTime() + 60 * 86400e3));
      driver.quoteFor = () => tdxV4.quote;
      driver.image = imageOf(tdxV4);
      const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key: acme.apiKey }).finally(() => clock.set(at(tdxV4)));
      const v = r.body.data.verdict;
      expect(v.checks.quote.ok).toBe(false);
      expect(v.checks.quote.failure).toEqual({ stage: "collateral", code: "expired" });
      expect(v.reason).toMatch(/^quote: TCB info expired at its nextUpdate .* \(checked at 2025-09-17T10:00:34.000Z\)$/);
      expect(v.at).toBe("2025-09-17T10:00:34.000Z");
    });
  });

  describe("POST /v1/attestation/verify", () => {
    const tdxFixtures = allFixtures().filter((f) => f.collateral && f.expected.tee_type === "TDX");
    it.each(tdxFixtures.map((f) => [f.name, f] as const))("%s with its collateral and pinned time: status/advisories as expected.json, ok only for UpToDate", async (_n, f) => {
      const r = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ quote: f.quote.toString("base64"), collateral: f.collateral, at: f.expected.at_unix }) });
      expect(r.status).toBe(200);
      const v = r.body.data;
      expect(v.ok).toBe(f.expected.ok === true && f.expected.status === "UpToDate");
      expect(v.accepted_statuses).toEqual(["UpToDate"]);
      expect(v.status).toBe(f.expected.status);
      expect(v.advisory_ids).toEqual(f.expected.advisory_ids ?? []);
      expect(v.fmspc).toBe(f.expected.fmspc);
      expect(v.measurements.mrtd).toBe(f.expected.mr_td);
      expect(v.collateral_source).toBe("request");
      if (!f.expected.ok) expect(v.reason).toMatch(/^No matching TCB level found/);
    });

    it("OutOfDate quotes (both gcp fixtures): ok=false by default, saying which statuses were accepted", async () => {
      for (const f of [gcp, loadFixture("gcp-automata-v4-outofdate")]) {
        const r = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ quote: f.quote.toString("base64"), collateral: f.collateral, at: f.expected.at_unix }) });
        expect(r.body.data, f.name).toMatchObject({
          ok: false,
          status: "OutOfDate",
          accepted_statuses: ["UpToDate"],
          failure: { stage: "policy", code: "tcb_status_not_accepted" },
          reason: expect.stringMatching(/^TCB status OutOfDate is not accepted \(accepted: UpToDate\)/),
        });
      }
    });

    it("expected_measurements leaving RTMR0 null: ok=false naming rtmr0; allow_unchecked [rtmr0]: ok, and the waiver is in the JSON", async () => {
      const f = tdxV4;
      const base = { quote: f.quote.toString("base64"), at: f.expected.at_unix, expected_measurements: { mrtd: f.expected.mr_td, rtmr0: null, rtmr1: f.expected.rtmr1, rtmr2: f.expected.rtmr2 } };
      const strict = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post(base) });
      expect(strict.status).toBe(200);
      expect(strict.body.data).toMatchObject({ ok: false, status: "UpToDate", failure: { stage: "measurements", code: "unchecked" } });
      expect(strict.body.data.reason).toMatch(/no expected value for rtmr0, so it was not checked/);
      expect(strict.body.data.manifest).toMatchObject({ ok: false, checked: 3, unchecked: ["rtmr0"], matched: ["mrtd", "rtmr1", "rtmr2"], allow_unchecked: [] });
      const waived = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ ...base, allow_unchecked: ["rtmr0"] }) });
      expect(waived.body.data).toMatchObject({ ok: true, reason: null, failure: null, manifest: { ok: true, allow_unchecked: ["rtmr0"] } });
      expect(waived.body.data.manifest.checks[1]).toEqual({ name: "rtmr0", result: "unchecked", expected: null, actual: f.expected.rtmr0, waived: true });
      // a waiver never excuses a mismatch
      const wrong = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ ...base, expected_measurements: { ...base.expected_measurements, rtmr0: "00".repeat(48) }, allow_unchecked: ["rtmr0"] }) });
      expect(wrong.body.data).toMatchObject({ ok: false, failure: { stage: "measurements", code: "mismatch" }, manifest: { mismatched: ["rtmr0"] } });
    });

    it("the SGX fixture is refused as not TDX (HTTP 200, ok=false)", async () => {
      const f = loadFixture("sgx-v3-config-sw-hardening");
      const r = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ quote: f.quote.toString("base64"), collateral: f.collateral, at: f.expected.at_unix }) });
      expect(r.status).toBe(200);
      expect(r.body.data).toMatchObject({ ok: false, status: null, failure: { stage: "parse", code: "not_tdx" }, measurements: null });
      expect(r.body.data.reason).toMatch(/not a TDX quote/);
    });

    it("server collateral: the bundle file by FMSPC, else the PCCS (asked for the quote's FMSPC and CA), hex quotes and ISO times", async () => {
      const a = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ quote: tdxV4.quote.toString("hex"), at: tdxV4.expected.at_iso }) });
      expect(a.body.data).toMatchObject({ ok: true, status: "UpToDate", collateral_source: "file", at: at(tdxV4).toISOString() });
      const b = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ quote: near.quote.toString("base64"), at: String(near.expected.at_unix) }) });
      expect(b.body.data).toMatchObject({ ok: true, status: "UpToDate", collateral_source: "pccs" });
      expect(pccs.calls).toContain(`/tdx/certification/v4/tcb?fmspc=${(near.expected.fmspc as string).toUpperCase()}`);
      expect(pccs.calls).toContain("/sgx/certification/v4/pckcrl?ca=platform&encoding=der");
      const parseOnly = loadFixture("dstack-lite-v4-parse-only");
      const c = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ quote: parseOnly.quote.toString("base64") }) });
      expect(c.status).toBe(200);
      expect(c.body.data).toMatchObject({ ok: false, collateral_source: null, fmspc: parseOnly.expected.fmspc, failure: { stage: "collateral", code: "collateral_unavailable" } });
      expect(c.body.data.reason).toMatch(/CVM_COLLATERAL_FILE has no collateral for FMSPC 90c06f000000.*CVM_PCCS_URL: .*HTTP 404/);
      expect(c.body.data.measurements.mrtd).toBe(parseOnly.expected.mr_td);
    });

    it("report_data: equal → ok; different → ok=false with the reason", async () => {
      const base = { quote: tdxV4.quote.toString("base64"), at: tdxV4.expected.at_unix };
      const good = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ ...base, report_data: (tdxV4.expected.report_data as string).toUpperCase() }) });
      expect(good.body.data).toMatchObject({ ok: true, report_data: { ok: true, reason: null } });
      const bad = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ ...base, report_data: "00".repeat(64) }) });
      expect(bad.body.data).toMatchObject({ ok: false, status: "UpToDate", failure: { stage: "report_data", code: "mismatch" }, report_data: { ok: false, actual: tdxV4.expected.report_data } });
    });

    it("bytes that are not a quote are a verdict, not an error", async () => {
      const r = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ quote: Buffer.from("hello world, not a quote").toString("base64") }) });
      expect(r.status).toBe(200);
      expect(r.body.data).toMatchObject({ ok: false, failure: { stage: "parse", code: "malformed_quote" } });
    });

    const q64 = tdxV4.quote.toString("base64");
    const garbage: Array<[string, unknown, string | undefined]> = [
      ["no quote", {}, "quote"],
      ["quote not a string", { quote: 42 }, "quote"],
      ["quote neither base64 nor hex", { quote: "this is not base64!" }, "quote"],
      ["quote with bad padding", { quote: q64.slice(0, -1) + "==" + "A" }, "quote"],
      ["empty quote", { quote: "" }, "quote"],
      ["collateral not an object", { quote: q64, collateral: "x" }, "collateral"],
      ["collateral missing a field", { quote: q64, collateral: { ...tdxV4.collateral, tcb_info: undefined } }, "collateral"],
      ["collateral hex field not hex", { quote: q64, collateral: { ...tdxV4.collateral, pck_crl: "zz" } }, "collateral"],
      ["at not a time", { quote: q64, at: "yesterday" }, "at"],
      ["at without zone", { quote: q64, at: "2025-07-19T10:00:34" }, "at"],
      ["at negative", { quote: q64, at: -5 }, "at"],
      ["report_data short", { quote: q64, report_data: "00".repeat(32) }, "report_data"],
      ["unknown field", { quote: q64, nonce: "00" }, "nonce"],
      ["expected_measurements with rtmr3", { quote: q64, expected_measurements: { rtmr3: "00".repeat(48) } }, "expected_measurements"],
      ["expected_measurements value not 48 bytes", { quote: q64, expected_measurements: { mrtd: "00" } }, "expected_measurements"],
      ["allow_unchecked unknown register", { quote: q64, expected_measurements: {}, allow_unchecked: ["rtmr3"] }, "allow_unchecked"],
      ["allow_unchecked without expected_measurements", { quote: q64, allow_unchecked: ["rtmr0"] }, "allow_unchecked"],
    ];
    it.each(garbage)("%s → 400 invalid_request", async (_, body, param) => {
      const r = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post(body) });
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe("invalid_request");
      expect(r.body.error.param).toBe(param);
    });

    it("oversized and non-JSON bodies are 400; no key is 401", async () => {
      const big = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, ...post({ quote: "A".repeat(70_000) }) });
      expect(big.status).toBe(400);
      expect(big.body.error.message).toMatch(/exceeds 65536 bytes/);
      const notJson = await d.fetch("/v1/attestation/verify", { key: acme.apiKey, method: "POST", headers: { "Content-Type": "application/json" }, body: "{quote:" });
      expect(notJson.status).toBe(400);
      expect((await d.fetch("/v1/attestation/verify", post({ quote: q64 }))).status).toBe(401);
    });
  });
});

describe("attestation API without any collateral source", () => {
  const dir = tempDir();
  const driver = new FakeDriver();
  let d: TestDaemon;
  let key: string;

  beforeAll(async () => {
    d = await startTestDaemon({ dataDir: dir.path, driver, clock: new ManualClock(at(tdxV4)) });
    key = (await d.tenant("acme")).apiKey;
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  it("POST verify without collateral: ok=false with the reason, measurements still parsed, counted as error", async () => {
    const before = await quoteCounts(d);
    const r = await d.fetch("/v1/attestation/verify", { key, ...post({ quote: tdxV4.quote.toString("base64") }) });
    expect(r.status).toBe(200);
    expect(r.body.data).toMatchObject({ ok: false, status: null, reason: NO_COLLATERAL_SOURCE, fmspc: tdxV4.expected.fmspc, collateral_source: null });
    expect(r.body.data.reason).toBe("no collateral source configured (CVM_COLLATERAL_FILE or CVM_PCCS_URL)");
    expect(r.body.data.measurements.mrtd).toBe(tdxV4.expected.mr_td);
    expect((await quoteCounts(d)).error).toBe(before.error! + 1);
    // Collateral in the request still works on such a server.
    const withC = await d.fetch("/v1/attestation/verify", { key, ...post({ quote: tdxV4.quote.toString("base64"), collateral: tdxV4.collateral }) });
    expect(withC.body.data).toMatchObject({ ok: true, status: "UpToDate", collateral_source: "request" });
  });

  it("instance attestation: the quote check carries the same reason", async () => {
    driver.quoteFor = () => tdxV4.quote;
    const name = await readyInstance(d, key);
    const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key });
    expect(r.status).toBe(200);
    expect(r.body.data.verdict.checks.quote).toMatchObject({ ok: false, reason: NO_COLLATERAL_SOURCE });
    expect(r.body.data.verdict.checks.measurements).toMatchObject({ ok: false, image_id: null });
    expect(r.body.data.verdict.reason).toBe(`quote: ${NO_COLLATERAL_SOURCE}`);
  });
});

describe("attestation API end to end under a test PKI (a quote over our own REPORTDATA)", () => {
  // Intel's keys cannot sign a quote over our nonce; a test root, pinned through the daemon's verifier, can.
  const dir = tempDir();
  const driver = new FakeDriver();
  const f = tdxV4;
  let d: TestDaemon;
  let key: string;
  let name: string;
  const events: Rtmr3Event[] = ["ssh-authorized-key", "openclaw-tree"].map((t, i) => {
    const event = JSON.stringify({ n: i });
    return { imr: 3, digest: eventDigest(t, event).toString("hex"), event_type: t, event };
  });
  const rtmr3 = replayRtmr(events);

  beforeAll(async () => {
    const quoter = await fixtureQuoter(f, at(f));
    const file = join(dir.path, "collateral.json");
    writeFileSync(file, JSON.stringify(quoter.collateral));
    d = await startTestDaemon({
      dataDir: join(dir.path, "data"),
      driver,
      clock: new ManualClock(at(f)),
      env: { CVM_COLLATERAL_FILE: file },
      quoteVerifier: new QuoteVerifier({ rootCaDer: quoter.pki.rootDer }),
    });
    key = (await d.tenant("acme")).apiKey;
    name = await readyInstance(d, key);
    driver.eventLog = events;
    driver.image = imageOf(f);
    // What a TDX guest would do: REPORTDATA and RTMR3 in the TD report, signed (here by the test PKI).
    driver.quoteFor = (_nonce, reportData) => quoter.quote(reportData, rtmr3);
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  it("every check passes: DCAP, REPORTDATA over nonce + host keys, manifest, RTMR3 replay", async () => {
    const before = await quoteCounts(d);
    const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key });
    expect(r.status).toBe(200);
    const v = r.body.data.verdict;
    expect(v.reason).toBeNull();
    expect(v.ok).toBe(true);
    expect(v.status).toBe("UpToDate");
    expect(v.checks.report_data.ok).toBe(true);
    expect(v.checks.report_data.actual).toBe(reportDataFor(Buffer.from(NONCE, "hex"), driver.hostKeys).toString("hex"));
    expect(v.checks.measurements).toMatchObject({ ok: true, checked: 4 });
    expect(v.checks.event_log).toMatchObject({ ok: true, events: 2, replayed: rtmr3.toString("hex") });
    expect(r.body.data.measurements.rtmr3).toBe(rtmr3.toString("hex"));
    expect((await quoteCounts(d)).accepted).toBe(before.accepted! + 1);
  });

  it("an image manifest that leaves RTMR0 null: ok=false naming rtmr0; ?allow_unchecked=rtmr0: ok, with the waiver in the verdict", async () => {
    driver.image = { id: "img-no-rtmr0", expectedMeasurements: { ...imageOf(f).expectedMeasurements, rtmr0: null } };
    try {
      const strict = (await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key })).body.data.verdict;
      expect(strict.ok).toBe(false);
      expect(strict.allow_unchecked).toEqual([]);
      expect(strict.checks.measurements).toMatchObject({ ok: false, image_id: "img-no-rtmr0", unchecked: ["rtmr0"], checked: 3 });
      expect(strict.reason).toMatch(/^measurements: image img-no-rtmr0: the manifest has no expected value for rtmr0, so it was not checked/);
      const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}&allow_unchecked=rtmr0`, { key });
      const waived = r.body.data.verdict;
      expect(waived).toMatchObject({ ok: true, reason: null, allow_unchecked: ["rtmr0"], accepted_statuses: ["UpToDate"] });
      expect(waived.checks.measurements.checks.map((c: { name: string; result: string; waived: boolean }) => `${c.name}:${c.result}${c.waived ? ":waived" : ""}`)).toEqual([
        "mrtd:matched",
        "rtmr0:unchecked:waived",
        "rtmr1:matched",
        "rtmr2:matched",
      ]);
      const typo = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}&allow_unchecked=rtmr3`, { key });
      expect(typo.status).toBe(400);
      expect(typo.body.error).toMatchObject({ code: "invalid_request", param: "allow_unchecked", message: expect.stringMatching(/"rtmr3" is not one of/) });
    } finally {
      driver.image = imageOf(f);
    }
  });

  it("a quote over other host keys (a different machine answering) fails the REPORTDATA check", async () => {
    const real = driver.quoteFor!;
    driver.quoteFor = (nonce) => real(nonce, reportDataFor(nonce, [ED]));
    const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key });
    driver.quoteFor = real;
    const v = r.body.data.verdict;
    expect(v.checks.quote.ok).toBe(true);
    expect(v.checks.report_data.ok).toBe(false);
    expect(v.ok).toBe(false);
    expect(v.reason).toMatch(/^report_data: /);
  });

  it("an event log that does not replay to RTMR3 fails the event_log check", async () => {
    driver.eventLog = events.slice(0, 1);
    const r = await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key });
    driver.eventLog = events;
    const v = r.body.data.verdict;
    expect(v.checks.report_data.ok).toBe(true);
    expect(v.checks.event_log.ok).toBe(false);
    expect(v.reason).toMatch(/^event_log: replaying 1 events gives/);
  });
});

describe("attestation API where the operator accepts OutOfDate (CVM_ACCEPT_TCB_STATUS)", () => {
  const dir = tempDir();
  const driver = new FakeDriver();
  let d: TestDaemon;
  let key: string;

  beforeAll(async () => {
    const file = join(dir.path, "collateral.json");
    writeFileSync(file, JSON.stringify(gcp.collateral));
    d = await startTestDaemon({
      dataDir: join(dir.path, "data"),
      driver,
      clock: new ManualClock(at(gcp)),
      env: { CVM_COLLATERAL_FILE: file, CVM_ACCEPT_TCB_STATUS: "UpToDate,OutOfDate" },
    });
    key = (await d.tenant("acme")).apiKey;
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  it("an OutOfDate quote is ok, and the verdict says which statuses were accepted", async () => {
    for (const f of [gcp, loadFixture("gcp-automata-v4-outofdate")]) {
      const r = await d.fetch("/v1/attestation/verify", { key, ...post({ quote: f.quote.toString("base64"), collateral: f.collateral, at: f.expected.at_unix }) });
      expect(r.body.data, f.name).toMatchObject({ ok: true, status: "OutOfDate", reason: null, failure: null, accepted_statuses: ["UpToDate", "OutOfDate"] });
    }
  });

  it("instance attestation: the quote check passes for OutOfDate under the operator's policy", async () => {
    driver.quoteFor = () => gcp.quote;
    driver.image = imageOf(gcp);
    const name = await readyInstance(d, key);
    const v = (await d.fetch(`/v1/instances/${name}/attestation?nonce=${NONCE}`, { key })).body.data.verdict;
    expect(v.accepted_statuses).toEqual(["UpToDate", "OutOfDate"]);
    expect(v.status).toBe("OutOfDate");
    expect(v.checks.quote).toEqual({ ok: true, reason: null, failure: null });
    // a real quote cannot bind our nonce, so the instance verdict as a whole still fails, on that alone
    expect(v.reason).toMatch(/^report_data: /);
  });
});
