import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import { fullFormats } from "ajv-formats/dist/formats.js";
import addFormats from "ajv-formats";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ManualClock } from "../../host/clock.js";
import { ApiKeyStore } from "../../host/store/api-keys.js";
import { TenantStore } from "../../host/store/tenants.js";
import type { Rtmr3Event } from "../../shared/protocol/messages.js";
import { parseCertificate, splitPemChain } from "../../shared/tdx/pck.js";
import { eventDigest, parseQuote, QuoteVerifier, replayRtmr } from "../../shared/tdx/index.js";
import { loadFixture } from "../../shared/tdx/test/fixtures.js";
import { TestPki } from "../../shared/tdx/test/test-pki.js";
import { bareApp, listen } from "../support/bare-app.js";
import { FakeDriver } from "../support/fake-driver.js";
import { startTestDaemon, tempDir, type TestDaemon } from "../support/daemon.js";
import { sshKeyPair } from "../support/ssh-keys.js";
import { until } from "../support/waiting.js";

// Every route's real answers against the OpenAPI document cvmd serves. For each documented
// (path, method, status) a request gets that status from the real daemon (FakeDriver guests, a test
// PKI that signs quotes over our REPORTDATA), and its body is validated with ajv against the schema
// the document gives for exactly that path, method and status. An answer whose status the document
// does not list fails where it is answered; a documented status that nothing here answered fails the
// last test, unless NOT_SAMPLED says why it cannot be reached.

/** Documented answers no request here can get, as "method path status", with the reason. */
const NOT_SAMPLED: Record<string, string> = {};

type Method = "get" | "post" | "delete";
type Fetch = TestDaemon["fetch"];
type Call = { key?: string; body?: unknown; headers?: Record<string, string> };

const ED = sshKeyPair("ed25519").public;
const NONCE = "a1".repeat(32);
const DOC_ID = "https://cvm.invalid/v1/openapi.json";
const IMAGE_ID = "cvm-00000000c0f0a0ce";
const f = loadFixture("tdx-v4-uptodate");
const at = new Date(f.expected.at_unix! * 1000);
const expectedMeasurements = { mrtd: f.expected.mr_td, rtmr0: f.expected.rtmr0, rtmr1: f.expected.rtmr1, rtmr2: f.expected.rtmr2 };

/** An RFC 6901 pointer into the document. */
const pointer = (...parts: string[]) => parts.map((p) => p.replace(/~/g, "~0").replace(/\//g, "~1")).join("/");

describe("OpenAPI document against every route's real answers", () => {
  const dir = tempDir();
  const driver = new FakeDriver();
  let d: TestDaemon;
  let key: string;
  let ready: string;
  let doc: { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
  let ajv: Ajv2020;
  let signedQuote: Buffer;
  const sampled = new Set<string>();
  const bodies = new Map<string, unknown>();

  const events: Rtmr3Event[] = ["ssh-authorized-key", "openclaw-tree"].map((t, i) => {
    const event = JSON.stringify({ n: i });
    return { imr: 3, digest: eventDigest(t, event).toString("hex"), event_type: t, event };
  });

  beforeAll(async () => {
    // A test root signs quotes over our REPORTDATA and RTMR3, and the collateral file that verifies them.
    const leaf = splitPemChain(parseQuote(f.quote).pckChainRaw, "c", true)[0]!;
    const pki = await TestPki.create({ notBefore: new Date("2020-01-01T00:00:00Z"), notAfter: new Date("2040-01-01T00:00:00Z"), sgxExtension: parseCertificate(leaf).sgxExtension! });
    const window = { thisUpdate: new Date(at.getTime() - 86400e3), nextUpdate: new Date(at.getTime() + 86400e3) };
    const collateral = await pki.collateral(f.collateral!, { root: await pki.crl("root", window), pck: await pki.crl("pckCa", window) });
    const file = join(dir.path, "collateral.json");
    writeFileSync(file, JSON.stringify(collateral));
    const rtmr3 = replayRtmr(events);
    const sign = (reportData: Buffer) =>
      pki.resignQuote(f.quote, (signed) => {
        reportData.copy(signed, 48 + 520);
        rtmr3.copy(signed, 48 + 472);
      });
    signedQuote = await sign(Buffer.alloc(64, 7));
    // An image directory as `make image` leaves it, so the manifest route has one to serve.
    mkdirSync(join(dir.path, "images", IMAGE_ID), { recursive: true });
    writeFileSync(join(dir.path, "images", IMAGE_ID, "manifest.json"), JSON.stringify({ image_id: IMAGE_ID, expected_measurements: expectedMeasurements }) + "\n");
    symlinkSync(IMAGE_ID, join(dir.path, "images", "current"));
    d = await startTestDaemon({
      dataDir: join(dir.path, "data"),
      driver,
      clock: new ManualClock(at),
      env: { CVM_COLLATERAL_FILE: file, CVM_IMAGE_DIR: join(dir.path, "images", "current") },
      quoteVerifier: new QuoteVerifier({ rootCaDer: pki.rootDer }),
    });
    key = (await d.tenant("acme")).apiKey;
    driver.eventLog = events;
    driver.image = { id: "img-conformance", expectedMeasurements };
    driver.quoteFor = (_nonce, reportData) => sign(reportData);

    const r = await d.fetch("/v1/openapi.json");
    doc = r.body;
    ajv = new Ajv2020({ allErrors: true, strict: false });
    addFormats.default(ajv);
    ajv.addSchema(doc, DOC_ID);
    recordSample("get", "/v1/openapi.json", r);

    const created = await call(d.fetch, "post", "/v1/instances", "/v1/instances", { key, body: { public_key: ED } }, 202);
    ready = created.body.data.name;
    await until(() => d.fetch(`/v1/instances/${ready}`, { key }), (r) => r.body.data.status === "ready");
  });
  afterAll(async () => {
    await d.close();
    dir.remove();
  });

  /** The validator of the schema the document gives for this answer; fails the test when it gives none. */
  function validatorOf(method: Method, path: string, status: number): ValidateFunction {
    const documented = doc.paths[path]?.[method]?.responses[String(status)];
    expect(documented, `the document lists ${status} for ${method.toUpperCase()} ${path}`).toBeDefined();
    const validate = ajv.getSchema(`${DOC_ID}#/${pointer("paths", path, method, "responses", String(status), "content", "application/json", "schema")}`);
    expect(validate, `a JSON schema for ${status} of ${method.toUpperCase()} ${path}`).toBeDefined();
    return validate!;
  }

  function recordSample(method: Method, path: string, r: { status: number; body: unknown }): void {
    const validate = validatorOf(method, path, r.status);
    const ok = validate(r.body);
    expect(ok, `${method.toUpperCase()} ${path} → ${r.status}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(r.body).slice(0, 2000)}`).toBe(true);
    const id = `${method} ${path} ${r.status}`;
    sampled.add(id);
    bodies.set(id, r.body);
  }

  /** One request (`url` for the documented `path`) that must be answered `status`; its body is checked against the document. */
  async function call(fetch: Fetch, method: Method, path: string, url: string, c: Call, status: number) {
    const headers: Record<string, string> = { ...c.headers };
    if (c.body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(url, { method: method.toUpperCase(), key: c.key, headers, body: c.body === undefined ? undefined : JSON.stringify(c.body) });
    expect(r.status, `${method.toUpperCase()} ${url}: ${JSON.stringify(r.body).slice(0, 500)}`).toBe(status);
    recordSample(method, path, r);
    return r;
  }

  /** Every tenant route with a request its handler would accept (the name is one nobody has). */
  const tenantRoutes = (): Array<[Method, string, string, Call]> => [
    ["post", "/v1/instances", "/v1/instances", { body: { public_key: ED } }],
    ["get", "/v1/instances", "/v1/instances", {}],
    ["get", "/v1/instances/{name}", "/v1/instances/zzzzzzzz", {}],
    ["delete", "/v1/instances/{name}", "/v1/instances/zzzzzzzz", {}],
    ["get", "/v1/instances/{name}/events", "/v1/instances/zzzzzzzz/events", {}],
    ["get", "/v1/instances/{name}/attestation", `/v1/instances/zzzzzzzz/attestation?nonce=${NONCE}`, {}],
    ["post", "/v1/attestation/verify", "/v1/attestation/verify", { body: { quote: signedQuote.toString("base64") } }],
    ["get", "/v1/usage", "/v1/usage", {}],
    ["get", "/v1/images/{id}/manifest", "/v1/images/cvm-0000000000000000/manifest", {}],
  ];

  it("is OpenAPI 3.1 and uses only formats the validator checks", () => {
    expect(sampled.has("get /v1/openapi.json 200")).toBe(true);
    const formats = new Set<string>();
    JSON.stringify(doc, (k, v) => (k === "format" && typeof v === "string" ? (formats.add(v), v) : v));
    for (const name of formats) expect(Object.keys(fullFormats), `format ${name}`).toContain(name);
  });

  it("POST /v1/instances: 202 created and replayed, 400, 409", async () => {
    const idem = { "Idempotency-Key": "conformance-1" };
    await call(d.fetch, "post", "/v1/instances", "/v1/instances", { key, body: { public_key: ED, inference_model: null }, headers: idem }, 202);
    const replay = await call(d.fetch, "post", "/v1/instances", "/v1/instances", { key, body: { public_key: ED, inference_model: null }, headers: idem }, 202);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    await call(d.fetch, "post", "/v1/instances", "/v1/instances", { key, body: { public_key: "ssh-rsa AAAA" } }, 400);
    await call(d.fetch, "post", "/v1/instances", "/v1/instances", { key, body: { public_key: ED, extra: 1 } }, 400);
    await call(d.fetch, "post", "/v1/instances", "/v1/instances", { key, body: { public_key: ED }, headers: idem }, 409);
  });

  it("GET /v1/instances: 200 (a page with a next cursor, the last page), 400", async () => {
    const first = await call(d.fetch, "get", "/v1/instances", "/v1/instances?limit=1", { key }, 200);
    expect(first.body.data.next_cursor).toEqual(expect.any(String));
    const last = await call(d.fetch, "get", "/v1/instances", "/v1/instances?limit=1000", { key }, 200);
    expect(last.body.data.next_cursor).toBeNull();
    await call(d.fetch, "get", "/v1/instances", "/v1/instances?limit=0", { key }, 400);
    await call(d.fetch, "get", "/v1/instances", "/v1/instances?cursor=nonsense", { key }, 400);
  });

  it("GET and DELETE /v1/instances/{name}, GET its events: 200/202 and 404", async () => {
    const shown = await call(d.fetch, "get", "/v1/instances/{name}", `/v1/instances/${ready}`, { key }, 200);
    expect(shown.body.data.ssh).not.toBeNull();
    await call(d.fetch, "get", "/v1/instances/{name}/events", `/v1/instances/${ready}/events`, { key }, 200);
    const doomed = (await call(d.fetch, "post", "/v1/instances", "/v1/instances", { key, body: { public_key: ED } }, 202)).body.data.name;
    await call(d.fetch, "get", "/v1/instances/{name}", `/v1/instances/${doomed}`, { key }, 200);
    await call(d.fetch, "delete", "/v1/instances/{name}", `/v1/instances/${doomed}`, { key }, 202);
    await until(() => d.fetch(`/v1/instances/${doomed}`, { key }), (r) => r.body.data.status === "terminated");
    await call(d.fetch, "get", "/v1/instances/{name}", `/v1/instances/${doomed}`, { key }, 200);
    await call(d.fetch, "get", "/v1/instances/{name}/events", `/v1/instances/${doomed}/events`, { key }, 200);
    for (const name of ["zzzzzzzz", "NOT-A-NAME"]) {
      await call(d.fetch, "get", "/v1/instances/{name}", `/v1/instances/${name}`, { key }, 404);
      await call(d.fetch, "delete", "/v1/instances/{name}", `/v1/instances/${name}`, { key }, 404);
      await call(d.fetch, "get", "/v1/instances/{name}/events", `/v1/instances/${name}/events`, { key }, 404);
    }
  });

  it("GET /v1/instances/{name}/attestation: 200 with evidence and a verdict, 200 without TDX, 400, 404, 409", async () => {
    const path = "/v1/instances/{name}/attestation";
    const good = await call(d.fetch, "get", path, `/v1/instances/${ready}/attestation?nonce=${NONCE}`, { key }, 200);
    expect(good.body.data.verdict).toMatchObject({ ok: true, checks: { measurements: { ok: true }, event_log: { ok: true } } });
    // A manifest that leaves a register out, waived and not.
    driver.image = { id: "img-no-rtmr0", expectedMeasurements: { ...expectedMeasurements, rtmr0: null } };
    expect((await call(d.fetch, "get", path, `/v1/instances/${ready}/attestation?nonce=${NONCE}`, { key }, 200)).body.data.verdict.ok).toBe(false);
    expect((await call(d.fetch, "get", path, `/v1/instances/${ready}/attestation?nonce=${NONCE}&allow_unchecked=rtmr0`, { key }, 200)).body.data.verdict.ok).toBe(true);
    driver.image = undefined;
    const quoteFor = driver.quoteFor;
    driver.quoteFor = () => Buffer.from("not a quote");
    expect((await call(d.fetch, "get", path, `/v1/instances/${ready}/attestation?nonce=${NONCE}`, { key }, 200)).body.data.measurements).toBeNull();
    driver.quoteFor = null;
    expect((await call(d.fetch, "get", path, `/v1/instances/${ready}/attestation?nonce=${NONCE}`, { key }, 200)).body.data.available).toBe(false);
    driver.quoteFor = quoteFor;
    driver.image = { id: "img-conformance", expectedMeasurements };

    await call(d.fetch, "get", path, `/v1/instances/${ready}/attestation`, { key }, 400);
    await call(d.fetch, "get", path, `/v1/instances/${ready}/attestation?nonce=${NONCE}&allow_unchecked=rtmr3`, { key }, 400);
    await call(d.fetch, "get", path, `/v1/instances/zzzzzzzz/attestation?nonce=${NONCE}`, { key }, 404);
    driver.readyAfterMs = 60_000;
    const slow = (await call(d.fetch, "post", "/v1/instances", "/v1/instances", { key, body: { public_key: ED } }, 202)).body.data.name;
    driver.readyAfterMs = 0;
    await call(d.fetch, "get", path, `/v1/instances/${slow}/attestation?nonce=${NONCE}`, { key }, 409);
    await d.fetch(`/v1/instances/${slow}`, { key, method: "DELETE" });
  });

  it("POST /v1/attestation/verify: 200 verified, failed and unparseable (with the comparisons asked for), 400", async () => {
    const path = "/v1/attestation/verify";
    const quote = signedQuote.toString("base64");
    const ok = await call(d.fetch, "post", path, path, { key, body: { quote, report_data: "07".repeat(64), expected_measurements: { ...expectedMeasurements, rtmr0: null }, allow_unchecked: ["rtmr0"] } }, 200);
    expect(ok.body.data).toMatchObject({ ok: true, collateral_source: "file", report_data: { ok: true }, manifest: { ok: true } });
    // Intel's own collateral does not chain to this server's (test) root.
    const intel = await call(d.fetch, "post", path, path, { key, body: { quote: f.quote.toString("hex"), collateral: f.collateral, at: f.expected.at_iso } }, 200);
    expect(intel.body.data).toMatchObject({ ok: false, collateral_source: "request" });
    const garbage = await call(d.fetch, "post", path, path, { key, body: { quote: Buffer.from("not a quote").toString("base64"), expected_measurements: expectedMeasurements, report_data: "00".repeat(64) } }, 200);
    expect(garbage.body.data).toMatchObject({ ok: false, measurements: null, manifest: { ok: false } });
    await call(d.fetch, "post", path, path, { key, body: { quote: "not base64!" } }, 400);
    await call(d.fetch, "post", path, path, { key, body: { quote, collateral: { ...f.collateral, pck_crl: "zz" } } }, 400);
  });

  it("GET /v1/images/{id}/manifest: 200, 404", async () => {
    const path = "/v1/images/{id}/manifest";
    await call(d.fetch, "get", path, `/v1/images/${IMAGE_ID}/manifest`, { key }, 200);
    await call(d.fetch, "get", path, "/v1/images/cvm-0000000000000000/manifest", { key }, 404);
    await call(d.fetch, "get", path, "/v1/images/..%2Fetc/manifest", { key }, 404);
  });

  it("GET /v1/usage: 200", async () => {
    await call(d.fetch, "get", "/v1/usage", "/v1/usage", { key }, 200);
  });

  it("every tenant route: 401 without a token, 403 for a suspended tenant, 500 on an unexpected fault, 503 while storage is busy", async () => {
    const suspended = (await d.tenant("suspended")).apiKey;
    await new TenantStore(d.db).setSuspended("suspended", at);
    for (const [method, path, url, c] of tenantRoutes()) {
      await call(d.fetch, method, path, url, c, 401);
      await call(d.fetch, method, path, url, { ...c, key: suspended }, 403);
    }
    // Faults injected where every tenant request passes first: the lookup of its key.
    const lookup = vi.spyOn(ApiKeyStore.prototype, "cachedWithTenant");
    try {
      lookup.mockImplementation(() => {
        throw new Error("injected fault (test)");
      });
      for (const [method, path, url, c] of tenantRoutes()) await call(d.fetch, method, path, url, { ...c, key }, 500);
      lookup.mockImplementation(() => {
        throw Object.assign(new Error("SQLITE_BUSY: database is locked (injected)"), { code: "SQLITE_BUSY" });
      });
      for (const [method, path, url, c] of tenantRoutes()) await call(d.fetch, method, path, url, { ...c, key }, 503);
    } finally {
      lookup.mockRestore();
    }
  });

  it("every route: 429 past the per-address rate limit", async () => {
    const limitedDir = tempDir();
    const limited = await startTestDaemon({ dataDir: limitedDir.path, driver: new FakeDriver(), env: { CVM_RATE_LIMIT_PER_ADDRESS: "1" } });
    try {
      const limitedKey = (await limited.tenant("acme")).apiKey;
      await limited.fetch("/v1/usage", { key: limitedKey });
      for (const [method, path, url, c] of tenantRoutes()) await call(limited.fetch, method, path, url, { ...c, key: limitedKey }, 429);
      await call(limited.fetch, "get", "/v1/openapi.json", "/v1/openapi.json", {}, 429);
    } finally {
      await limited.close();
      limitedDir.remove();
    }
  });

  it("every route: 503 while the daemon drains", async () => {
    // The app cvmd serves, told it is draining (a real daemon drains only on its way out).
    const served = await listen(bareApp({ catalogue: d.config.catalogue, draining: () => true }).app);
    const fetchApp: Fetch = async (url, { key: token, ...init } = {}) => {
      const headers = new Headers(init.headers);
      if (token) headers.set("Authorization", `Bearer ${token}`);
      const res = await fetch(served.url + url, { ...init, headers });
      return { status: res.status, headers: res.headers, body: await res.json() };
    };
    try {
      for (const [method, path, url, c] of tenantRoutes()) await call(fetchApp, method, path, url, { ...c, key }, 503);
      await call(fetchApp, "get", "/v1/openapi.json", "/v1/openapi.json", {}, 503);
    } finally {
      served.close();
    }
  });

  it("refuses bodies the document does not describe (so the checks above can fail)", () => {
    const instance = bodies.get("get /v1/instances/{name} 200") as { data: Record<string, unknown> };
    const validate = validatorOf("get", "/v1/instances/{name}", 200);
    expect(validate(instance)).toBe(true);
    const wrong = [
      { ...instance, data: { ...instance.data, status: "exploded" } },
      { ...instance, data: { ...instance.data, created_at: "yesterday" } },
      { ...instance, data: { ...instance.data, hostname: undefined } },
      { ...instance, data: { ...instance.data, undocumented: 1 } },
      { ...instance, request_id: undefined },
      { request_id: "x", correlation_id: null, error: { code: "not_found", message: "no" } },
    ];
    for (const body of wrong) expect(validate(JSON.parse(JSON.stringify(body))), JSON.stringify(body).slice(0, 200)).toBe(false);
    // An error body is checked against its status: a 404 must carry not_found.
    const notFound = bodies.get("get /v1/instances/{name} 404") as { error: Record<string, unknown> };
    expect(validatorOf("get", "/v1/instances/{name}", 404)({ ...notFound, error: { ...notFound.error, code: "conflict" } })).toBe(false);
    const verdict = bodies.get("post /v1/attestation/verify 200") as { data: Record<string, unknown> };
    expect(validatorOf("post", "/v1/attestation/verify", 200)({ ...verdict, data: { ...verdict.data, accepted_statuses: ["Fine"] } })).toBe(false);
  });

  it("sampled every (path, method, status) the document lists, except those NOT_SAMPLED says cannot be reached", () => {
    const documented: string[] = [];
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) for (const status of Object.keys(op.responses)) documented.push(`${method} ${path} ${status}`);
    }
    expect(documented.length).toBeGreaterThan(50);
    const missing = documented.filter((id) => !sampled.has(id) && !(id in NOT_SAMPLED));
    expect(missing, "documented answers without a sample").toEqual([]);
    for (const [id, reason] of Object.entries(NOT_SAMPLED)) {
      expect(documented, `NOT_SAMPLED ${id} (${reason}) is documented`).toContain(id);
      expect(sampled.has(id), `NOT_SAMPLED ${id} was sampled after all`).toBe(false);
    }
  });
});
