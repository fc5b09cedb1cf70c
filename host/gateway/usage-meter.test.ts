import { describe, expect, test } from "vitest";
import { SseUsageMeter, estimateInputTokens, reportedUsage, usageOfJsonResponse } from "./usage-meter.js";

const sse = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;

describe("usage metering", () => {
  test("takes the usage chunk of a stream, however the bytes are split", () => {
    const text =
      sse({ choices: [{ delta: { role: "assistant", content: "" } }] }) +
      sse({ choices: [{ delta: { content: "héllo wörld" } }] }) +
      sse({ choices: [], usage: { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 } }) +
      "data: [DONE]\n\n";
    const bytes = Buffer.from(text);
    for (const step of [1, 2, 3, 7, bytes.length]) {
      const m = new SseUsageMeter();
      for (let i = 0; i < bytes.length; i += step) m.push(bytes.subarray(i, i + step));
      expect(m.finish(999)).toEqual({ inputTokens: 12, outputTokens: 3, estimated: false });
      expect(m.sawDone).toBe(true);
      expect(m.events).toBe(3);
    }
  });

  test("estimates from the generated text when the stream carries no usage", () => {
    const m = new SseUsageMeter();
    m.push(Buffer.from(sse({ choices: [{ delta: { content: "abcdefgh" } }] }) + sse({ choices: [{ delta: { tool_calls: [{ function: { name: "ls", arguments: "{}" } }] } }] })));
    expect(m.finish(5)).toEqual({ inputTokens: 5, outputTokens: 3, estimated: true }); // 8 + 2 + 2 bytes → 3
  });

  test("ignores comments, keep-alives and junk lines", () => {
    const m = new SseUsageMeter();
    m.push(Buffer.from(": keep-alive\r\n\r\nevent: ping\ndata: not json\n\n" + sse({ usage: { prompt_tokens: 1, completion_tokens: 1 } })));
    expect(m.finish(0)).toEqual({ inputTokens: 1, outputTokens: 1, estimated: false });
  });

  test("reads usage of whole responses, and estimates without it", () => {
    expect(usageOfJsonResponse({ usage: { prompt_tokens: 7, total_tokens: 7 } }, 0)).toEqual({ inputTokens: 7, outputTokens: 0, estimated: false });
    expect(usageOfJsonResponse({ choices: [{ message: { content: "12345" } }] }, 4)).toEqual({ inputTokens: 4, outputTokens: 2, estimated: true });
    expect(reportedUsage({ prompt_tokens: -1, completion_tokens: 2 })).toBeNull();
    expect(reportedUsage({ prompt_tokens: 1, completion_tokens: 2.5 })).toBeNull();
    expect(estimateInputTokens({ messages: [{ role: "user", content: "hi" }] })).toBe(Math.ceil('[{"role":"user","content":"hi"}]'.length / 4));
    expect(estimateInputTokens({ input: "abcd" })).toBe(1);
  });
});
