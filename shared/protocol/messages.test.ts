import { describe, expect, test } from "vitest";
import { decodeAgentMessage, decodeHostMessage, encodeMessagePayload } from "./codec.js";
import { validateAgentMessage, validateHostMessage, validateSetupParams } from "./messages.js";
import { AGENT_SAMPLES, HOST_SAMPLES, decodedForm } from "./testdata/samples.js";
import { Encoder } from "cbor-x";

const raw = new Encoder({ useRecords: false, mapsAsObjects: true, variableMapSize: true, tagUint8Array: false });
const enc = (v: unknown) => Buffer.from(raw.encode(v));

describe("message validation", () => {
  const setup = HOST_SAMPLES.setup as Extract<(typeof HOST_SAMPLES)[string], { type: "setup" }>;

  test.each([
    ["unknown type", { type: "exec", id: 1, body: { cmd: "id" } }, /unknown host message type/],
    ["missing id on a request", { type: "setup", body: setup.body }, /missing id/],
    ["reply key on a request", { type: "setup", id: 1, re: 2, body: setup.body }, /unknown key "re"/],
    ["extra body key", { type: "setup", id: 1, body: { ...setup.body, command: "rm -rf /" } }, /unknown key "command"/],
    ["non-openclaw agent", { type: "setup", id: 1, body: { ...setup.body, agent: "other" } }, /agent: must be one of openclaw/],
    ["gateway not http", { type: "setup", id: 1, body: { ...setup.body, gateway_address: "file:///etc/passwd" } }, /http\(s\) URL/],
    ["gateway with credentials", { type: "setup", id: 1, body: { ...setup.body, gateway_address: "http://u:p@h/" } }, /credentials/],
    ["model with spaces", { type: "setup", id: 1, body: { ...setup.body, inference_model: "a b" } }, /invalid format/],
    ["instance name uppercase", { type: "setup", id: 1, body: { ...setup.body, instance_name: "ABC" } }, /invalid format/],
    ["nonce too short", { type: "quote", id: 1, body: { nonce: Buffer.alloc(8) } }, /16\.\.64 bytes/],
    ["nonce as text", { type: "quote", id: 1, body: { nonce: "aa" } }, /byte string/],
    ["empty versions", { type: "hello", id: 1, body: { versions: [], host_version: "x" } }, /must not be empty/],
    ["negative id", { type: "hello", id: -1, body: { versions: [1], host_version: "x" } }, /non-negative integer/],
    ["float id", { type: "hello", id: 1.5, body: { versions: [1], host_version: "x" } }, /non-negative integer/],
    ["array instead of map", [1, 2, 3], /must be a map/],
    ["prepare with a parameter", { type: "prepare", id: 1, body: { public_key: "ssh-ed25519 AAAA" } }, /prepare: unknown key "public_key"/],
    ["prepare with a non-map body", { type: "prepare", id: 1, body: null }, /prepare: must be a map/],
    ["prepare without id", { type: "prepare", body: {} }, /missing id/],
  ])("host → agent: rejects %s", (_name, value, reason) => {
    const res = decodeHostMessage(enc(value));
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.reason).toMatch(reason);
  });

  test.each([
    ["bigint counter", { type: "egress", body: { bytes: 2n ** 64n - 1n, packets: 1, sampled_at: "2026-01-01T00:00:00Z" } }, /non-negative integer/],
    ["bad timestamp", { type: "egress", body: { bytes: 1, packets: 1, sampled_at: "yesterday" } }, /invalid format/],
    ["unknown failure code", { type: "failed", body: { code: "oops", message: "x" } }, /must be one of/],
    ["NaN load", { type: "heartbeat", body: { uptime_s: 1, load: [NaN, 0, 0], mem_total_bytes: 1, mem_available_bytes: 1, openclaw: "healthy" } }, /finite/],
    ["quote without report data", { type: "quote_reply", re: 1, body: { available: true, quote: Buffer.alloc(100), event_log: [] } }, /unknown key|missing report_data/],
    ["event log with wrong imr", { type: "quote_reply", re: 1, body: { available: false, reason: "x", event_log: [{ imr: 2, digest: "a".repeat(96), event_type: "t", event: "e" }] } }, /must be 3/],
    ["a Date where a string belongs", { type: "egress", body: { bytes: 1, packets: 1, sampled_at: new Date() } }, /must be a string/],
    ["prepared without prepare_ms", { type: "prepared", body: { openclaw_version: "1", node_version: "v24" } }, /missing prepare_ms/],
    ["prepared with negative prepare_ms", { type: "prepared", body: { openclaw_version: "1", node_version: "v24", prepare_ms: -1 } }, /non-negative integer/],
    ["unknown phase", { type: "hello", re: 1, body: { version: 3, agent_version: "x", boot_id: "b", image_id: null, state: { phase: "warming", setup_digest: null, stage: null, ready: null, failed: null, prepared: null } } }, /phase: must be one of/],
    ["a malformed state.prepared", { type: "hello", re: 1, body: { version: 3, agent_version: "x", boot_id: "b", image_id: null, state: { phase: "prepared", setup_digest: null, stage: null, ready: null, failed: null, prepared: { openclaw_version: "1" } } } }, /state.prepared: missing node_version/],
  ])("agent → host: rejects %s", (_name, value, reason) => {
    const res = decodeAgentMessage(enc(value));
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.reason).toMatch(reason);
  });

  const hello = AGENT_SAMPLES.hello_ready as Extract<(typeof AGENT_SAMPLES)[string], { type: "hello" }>;
  const heartbeat = { uptime_s: 1, load: [0, 0, 0], mem_total_bytes: 1, mem_available_bytes: 1, openclaw: "healthy" };
  const event = { imr: 3, digest: "a".repeat(96), event_type: "t", event: "e" };

  // Bounds and shapes the hand-written validators enforced, held now that the types and checks come from one schema.
  test.each([
    ["an over-long bye reason", { type: "bye", body: { reason: "x".repeat(513) } }, /^invalid message: bye.reason: is longer than 512$/],
    ["an over-long progress message", { type: "progress", body: { stage: "s", message: "x".repeat(4097) } }, /progress.message: is longer than 4096/],
    ["an over-long header value", { type: "gw_request", body: { stream: 1, method: "GET", path: "/v1/models", headers: { accept: "x".repeat(1025) }, body: Buffer.alloc(0), end: true } }, /gw_request.headers.accept: is longer than 1024/],
    ["an end flag as text", { type: "gw_request_body", body: { stream: 1, data: Buffer.alloc(0), end: "yes" } }, /gw_request_body.end: must be a boolean/],
    ["a counter sent as text", { type: "heartbeat", body: { ...heartbeat, mem_total_bytes: "1" } }, /heartbeat.mem_total_bytes: must be a non-negative integer/],
    ["a counter above 2^53", { type: "egress", body: { bytes: 2 ** 53, packets: 1, sampled_at: "2026-01-01T00:00:00Z" } }, /egress.bytes: must be a non-negative integer/],
    ["four load averages", { type: "heartbeat", body: { ...heartbeat, load: [0, 0, 0, 0] } }, /heartbeat.load: has more than 3 items/],
    ["two load averages", { type: "heartbeat", body: { ...heartbeat, load: [0, 0] } }, /heartbeat.load: must have 3 items/],
    ["an extra key in a nested map", { ...hello, body: { ...hello.body, state: { ...hello.body.state, ready: { ...hello.body.state.ready!, shell: "/bin/sh" } } } }, /hello.state.ready: unknown key "shell"/],
    ["an extra key beside a bad value", { type: "egress", x: 1, body: { bytes: -1, packets: 1, sampled_at: "2026-01-01T00:00:00Z" } }, /message: unknown key "x"/],
    ["an event log over its bound", { type: "quote_reply", re: 1, body: { available: false, reason: "x", event_log: Array(257).fill(event) } }, /event_log: has more than 256 items/],
    ["an event with a bad digest", { type: "quote_reply", re: 1, body: { available: false, reason: "x", event_log: [event, { ...event, digest: "A".repeat(96) }] } }, /quote_reply.event_log\[1\].digest: has an invalid format/],
    ["a quote reply whose availability is text", { type: "quote_reply", re: 1, body: { available: "yes", reason: "x", event_log: [] } }, /quote_reply.available: must be a boolean/],
    ["a cancel of stream 2^32", { type: "gw_cancel", body: { stream: 2 ** 32 } }, /gw_cancel.stream: must be at most 4294967295/],
  ])("agent → host: still rejects %s", (_name, value, reason) => {
    const res = decodeAgentMessage(enc(value));
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.reason).toMatch(reason);
  });

  test.each([
    ["a Date as the prepare body", { type: "prepare", id: 1, body: new Date(0) }, /prepare: must be a map/],
    ["a Set as gateway headers", { type: "gw_response", body: { stream: 1, status: 200, headers: new Set(["a"]), body: Buffer.alloc(0), end: true } }, /gw_response.headers: must be a map/],
    ["an over-long public key", { type: "setup", id: 1, body: { ...setup.body, public_key: "k".repeat(8193) } }, /setup.public_key: is longer than 8192/],
  ])("host → agent: still rejects %s", (_name, value, reason) => {
    const res = decodeHostMessage(enc(value));
    expect(res.ok).toBe(false);
    if (!res.ok) expect(res.reason).toMatch(reason);
  });

  test("a saved setup read back as JSON cannot carry a __proto__ key", () => {
    const saved = JSON.parse(JSON.stringify(setup.body).replace("{", '{"__proto__":{"agent":"x"},'));
    expect(() => validateSetupParams(saved, "saved setup")).toThrow(/^saved setup: unknown key "__proto__"$/);
  });

  test("malformed CBOR and trailing bytes are reported, not thrown", () => {
    expect(decodeHostMessage(Buffer.from([0xa1, 0x61]))).toMatchObject({ ok: false, reason: expect.stringMatching(/malformed CBOR/) });
    const good = encodeMessagePayload(HOST_SAMPLES.hello!);
    expect(decodeHostMessage(Buffer.concat([good, Buffer.from([0x00])]))).toMatchObject({ ok: false, reason: expect.stringMatching(/malformed CBOR/) });
  });

  test("__proto__ keys cannot pollute prototypes", () => {
    const payload = Buffer.from("a3647479706565" + "68656c6c6f" + "626964" + "01" + "69" + Buffer.from("__proto__").toString("hex") + "a16178" + "01", "hex");
    const res = decodeHostMessage(payload);
    expect(res.ok).toBe(false);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });

  test("a hello state without `prepared` (versions 1 and 2) decodes with prepared null; with it, it is kept", () => {
    const base = { type: "hello", re: 1, body: { version: 2, agent_version: "x", boot_id: "b", image_id: null, state: { phase: "awaiting_setup", setup_digest: null, stage: null, ready: null, failed: null } } };
    const old = decodeAgentMessage(enc(base));
    expect(old.ok && old.message.type === "hello" && old.message.body.state.prepared).toBe(null);
    const p = { openclaw_version: "2026.9.6", node_version: "v24.21.0", prepare_ms: 5 };
    const v3 = decodeAgentMessage(enc({ ...base, body: { ...base.body, version: 3, state: { ...base.body.state, phase: "prepared", prepared: p } } }));
    expect(v3.ok && v3.message.type === "hello" && v3.message.body.state).toMatchObject({ phase: "prepared", prepared: p });
  });

  test("every sample validates in its own direction only", () => {
    for (const m of Object.values(HOST_SAMPLES)) expect(validateHostMessage(JSON.parse(JSON.stringify(m), (_k, v) => (v?.type === "Buffer" ? Buffer.from(v.data) : v)))).toEqual(m);
    for (const m of Object.values(AGENT_SAMPLES)) expect(validateAgentMessage(JSON.parse(JSON.stringify(m), (_k, v) => (v?.type === "Buffer" ? Buffer.from(v.data) : v)))).toEqual(decodedForm(m));
    expect(() => validateSetupParams({ ...setup.body, public_key: "" })).toThrow(/too short/);
  });
});
