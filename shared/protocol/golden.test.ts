import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { decodeAgentMessage, decodeHostMessage, encodeMessage } from "./codec.js";
import { FRAME_HEADER_LEN } from "./frame.js";
import { AGENT_SAMPLES, HOST_SAMPLES, decodedForm } from "./testdata/samples.js";

// The golden file locks the wire format: a change to field names, key order, integer widths or the
// frame header shows up here. Regenerate only for a deliberate protocol version change.
const golden = JSON.parse(readFileSync(new URL("./testdata/golden-frames.json", import.meta.url), "utf8")) as {
  host: Record<string, string>;
  agent: Record<string, string>;
};

describe("golden frames", () => {
  test("every sample has a golden and vice versa", () => {
    expect(Object.keys(golden.host).sort()).toEqual(Object.keys(HOST_SAMPLES).sort());
    expect(Object.keys(golden.agent).sort()).toEqual(Object.keys(AGENT_SAMPLES).sort());
  });

  for (const [name, msg] of Object.entries(HOST_SAMPLES)) {
    test(`host → agent ${name} encodes to its golden bytes and decodes back`, () => {
      const frame = encodeMessage(msg);
      expect(frame.toString("hex")).toBe(golden.host[name]);
      const res = decodeHostMessage(frame.subarray(FRAME_HEADER_LEN));
      expect(res).toEqual({ ok: true, message: msg });
      // A host message is not something the host accepts from an agent, except the shared bye.
      if (msg.type !== "bye") expect(decodeAgentMessage(frame.subarray(FRAME_HEADER_LEN)).ok).toBe(false);
    });
  }

  for (const [name, msg] of Object.entries(AGENT_SAMPLES)) {
    test(`agent → host ${name} encodes to its golden bytes and decodes back`, () => {
      const frame = encodeMessage(msg);
      expect(frame.toString("hex")).toBe(golden.agent[name]);
      const res = decodeAgentMessage(frame.subarray(FRAME_HEADER_LEN));
      expect(res).toEqual({ ok: true, message: decodedForm(msg) });
      if (msg.type !== "bye") expect(decodeHostMessage(frame.subarray(FRAME_HEADER_LEN)).ok).toBe(false);
    });
  }

  test("key order of the input object does not change the bytes", () => {
    const m = HOST_SAMPLES.setup!;
    if (m.type !== "setup") throw new Error("sample");
    const b = m.body;
    const shuffled = {
      body: { instance_name: b.instance_name, public_key: b.public_key, gateway_address: b.gateway_address, agent: b.agent, inference_model: b.inference_model },
      type: m.type,
      id: m.id,
    } as typeof m;
    expect(encodeMessage(shuffled).equals(encodeMessage(m))).toBe(true);
  });
});
