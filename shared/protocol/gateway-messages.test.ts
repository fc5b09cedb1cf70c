import { Encoder } from "cbor-x";
import { describe, expect, test } from "vitest";
import { decodeAgentMessage, decodeHostMessage, encodeMessage } from "./codec.js";
import { MAX_GATEWAY_CHUNK, MAX_GATEWAY_HEADERS, isGatewayMessage } from "./messages.js";
import { AGENT_SAMPLES, HOST_SAMPLES } from "./testdata/samples.js";

const raw = new Encoder({ useRecords: false, mapsAsObjects: true, variableMapSize: true, tagUint8Array: false });
const enc = (v: unknown) => Buffer.from(raw.encode(v));
const req = (AGENT_SAMPLES.gw_request as Extract<(typeof AGENT_SAMPLES)[string], { type: "gw_request" }>).body;
const res = (HOST_SAMPLES.gw_response as Extract<(typeof HOST_SAMPLES)[string], { type: "gw_response" }>).body;

describe("gateway stream messages", () => {
  test.each([
    ["an instance id smuggled into the request", { type: "gw_request", body: { ...req, instance_id: "other" } }, /unknown key "instance_id"/],
    ["stream id 0", { type: "gw_request", body: { ...req, stream: 0 } }, /at least 1/],
    ["a method other than GET/POST", { type: "gw_request", body: { ...req, method: "DELETE" } }, /must be one of GET, POST/],
    ["a relative path", { type: "gw_request", body: { ...req, path: "v1/models" } }, /invalid format/],
    ["a path with a space", { type: "gw_request", body: { ...req, path: "/v1/a b" } }, /invalid format/],
    ["an upper-case header name", { type: "gw_request", body: { ...req, headers: { Authorization: "x" } } }, /not a lower-case token/],
    ["a __proto__ header", { type: "gw_request", body: { ...req, headers: JSON.parse('{"__proto__":"x"}') } }, /not a lower-case token|must be a map/],
    ["a header value with a newline", { type: "gw_request", body: { ...req, headers: { accept: "a\r\nx: y" } } }, /invalid format/],
    ["too many headers", { type: "gw_request", body: { ...req, headers: Object.fromEntries(Array.from({ length: MAX_GATEWAY_HEADERS + 1 }, (_, i) => [`h${i}`, "v"])) } }, /more than/],
    ["an oversized body chunk", { type: "gw_request_body", body: { stream: 1, data: Buffer.alloc(MAX_GATEWAY_CHUNK + 1), end: true } }, /bytes/],
    ["body as text", { type: "gw_request_body", body: { stream: 1, data: "hello", end: true } }, /byte string/],
    ["a cancel without a stream", { type: "gw_cancel", body: {} }, /missing stream/],
    ["a request id on a stream event", { type: "gw_cancel", id: 4, body: { stream: 1 } }, /unknown key "id"/],
  ])("agent → host: rejects %s", (_n, value, reason) => {
    const r = decodeAgentMessage(enc(value));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });

  test.each([
    ["status 99", { type: "gw_response", body: { ...res, status: 99 } }, /HTTP status/],
    ["status 600", { type: "gw_response", body: { ...res, status: 600 } }, /at most 599/],
    ["a missing end flag", { type: "gw_response_body", body: { stream: 1, data: Buffer.alloc(1) } }, /missing end/],
    ["a reset reason with control characters", { type: "gw_reset", body: { stream: 1, reason: "a\u0000b" } }, /invalid format/],
  ])("host → agent: rejects %s", (_n, value, reason) => {
    const r = decodeHostMessage(enc(value));
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });

  test("a maximal chunk still fits a frame", () => {
    const f = encodeMessage({ type: "gw_response", body: { ...res, headers: Object.fromEntries(Array.from({ length: MAX_GATEWAY_HEADERS }, (_, i) => [`h${i}`, "v".repeat(1024)])), body: Buffer.alloc(MAX_GATEWAY_CHUNK) } });
    expect(f.length).toBeLessThan(1024 * 1024);
  });

  test("only gw_* messages are gateway messages", () => {
    expect(Object.values(AGENT_SAMPLES).filter(isGatewayMessage).map((m) => m.type).sort()).toEqual(["gw_cancel", "gw_request", "gw_request", "gw_request_body"]);
    expect(Object.values(HOST_SAMPLES).filter(isGatewayMessage).map((m) => m.type).sort()).toEqual(["gw_reset", "gw_response", "gw_response", "gw_response_body"]);
  });
});
