import { createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { checkEventLog, eventDigest, extendRtmr, parseEventLog, replayRtmr, type RtmrEvent } from "./event-log.js";

const ev = (event_type: string, event: string): RtmrEvent => ({ imr: 3, digest: eventDigest(event_type, event).toString("hex"), event_type, event });

describe("RTMR3 event log", () => {
  test("eventDigest is SHA-384 of UTF-8(type + ':' + payload)", () => {
    const payload = '{"fingerprint":"SHA256:abc","note":"é"}';
    expect(eventDigest("ssh-authorized-key", payload).toString("hex")).toBe(
      createHash("sha384").update(Buffer.from(`ssh-authorized-key:${payload}`, "utf8")).digest("hex"),
    );
    expect(() => eventDigest("bad:type", "x")).toThrow(/event type/);
    expect(() => eventDigest("", "x")).toThrow(/event type/);
  });

  test("replay starts at 48 zero bytes and extends SHA-384(rtmr || digest)", () => {
    expect(replayRtmr([]).equals(Buffer.alloc(48))).toBe(true);
    const a = ev("openclaw-tree", '{"digest":"sha256:00"}');
    const b = ev("ssh-authorized-key", '{"fingerprint":"SHA256:x"}');
    const one = createHash("sha384").update(Buffer.alloc(48)).update(Buffer.from(a.digest, "hex")).digest();
    const two = createHash("sha384").update(one).update(Buffer.from(b.digest, "hex")).digest();
    expect(replayRtmr([a, b]).equals(two)).toBe(true);
    expect(extendRtmr(Buffer.alloc(48), Buffer.from(a.digest, "hex")).equals(one)).toBe(true);
    // order matters
    expect(replayRtmr([b, a]).equals(two)).toBe(false);
  });

  test("an edited payload or a foreign IMR is caught", () => {
    const a = ev("openclaw-tree", '{"digest":"sha256:00"}');
    expect(() => replayRtmr([{ ...a, event: '{"digest":"sha256:01"}' }])).toThrow(/event 0: digest/);
    expect(() => replayRtmr([{ ...a, imr: 2 }])).toThrow(/imr must be 3/);
  });

  test("checkEventLog compares with the quote's RTMR3 and never throws", () => {
    const log = [ev("openclaw-tree", "{}"), ev("ssh-authorized-key", '{"fingerprint":"SHA256:x"}')];
    const rtmr3 = replayRtmr(log).toString("hex");
    expect(checkEventLog(JSON.parse(JSON.stringify(log)), rtmr3.toUpperCase())).toMatchObject({ ok: true, events: 2 });
    expect(checkEventLog(log.slice(0, 1), rtmr3)).toMatchObject({ ok: false, events: 1 });
    expect(checkEventLog("nope", rtmr3).reason).toMatch(/JSON array/);
    expect(() => parseEventLog([{ imr: 3, digest: "00", event_type: "a", event: "" }])).toThrow(/96 hex/);
  });
});
