import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, test } from "vitest";
import { replayRtmr, Rtmr3EventLog, SysfsRtmrExtender, type RtmrExtender } from "./rtmr3-event-log.js";
import { eventDigest } from "./tdx-digests.js";

/** Test double for the TDX measurement register (no TDX hardware here): extend = SHA-384(old || digest). */
class FakeRtmr3 implements RtmrExtender {
  value = Buffer.alloc(48);
  extends = 0;
  description = "fake";
  async read() {
    return this.value;
  }
  async extend(d: Buffer) {
    this.value = createHash("sha384").update(this.value).update(d).digest();
    this.extends++;
    return true;
  }
}

const logger = pino({ level: "silent" });
let dir: string;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("Rtmr3EventLog", () => {
  test("appends before extending, is idempotent, and the register equals the replay", async () => {
    dir = await mkdtemp(join(tmpdir(), "rtmr-"));
    const rtmr = new FakeRtmr3();
    const log = new Rtmr3EventLog(join(dir, "events.json"), rtmr, logger);
    await log.load();
    await log.record("ssh-authorized-key", "SHA256:x");
    await log.record("openclaw-tree", "d1");
    expect(await log.record("ssh-authorized-key", "SHA256:x")).toEqual({ recorded: false, extended: false });
    expect(rtmr.extends).toBe(2);
    const onDisk = JSON.parse(await readFile(join(dir, "events.json"), "utf8"));
    expect(onDisk).toEqual(log.entries());
    expect(onDisk[1]).toEqual({ imr: 3, digest: eventDigest("openclaw-tree", "d1").toString("hex"), event_type: "openclaw-tree", event: "d1" });
    expect(rtmr.value).toEqual(replayRtmr(log.entries()));
  });

  test("recover() finishes an extend a crash interrupted; leaves a consistent register alone", async () => {
    dir = await mkdtemp(join(tmpdir(), "rtmr-"));
    const rtmr = new FakeRtmr3();
    const first = new Rtmr3EventLog(join(dir, "events.json"), rtmr, logger);
    await first.load();
    await first.record("a", "1");
    // Simulate: the second event reached the log, the process died before extending.
    const e2 = { imr: 3, digest: eventDigest("b", "2").toString("hex"), event_type: "b", event: "2" };
    await writeFile(join(dir, "events.json"), JSON.stringify([...first.entries(), e2]));
    const again = new Rtmr3EventLog(join(dir, "events.json"), rtmr, logger);
    await again.load();
    await again.recover();
    expect(rtmr.value).toEqual(replayRtmr(again.entries()));
    const n = rtmr.extends;
    await again.recover();
    expect(rtmr.extends).toBe(n);
  });

  test("a log entry whose digest does not match its event is refused at load", async () => {
    dir = await mkdtemp(join(tmpdir(), "rtmr-"));
    await writeFile(join(dir, "events.json"), JSON.stringify([{ imr: 3, digest: "00".repeat(48), event_type: "a", event: "1" }]));
    await expect(new Rtmr3EventLog(join(dir, "events.json"), new FakeRtmr3(), logger).load()).rejects.toThrow(/wrong digest/);
  });

  test("without the sysfs register the log is still kept and nothing throws", async () => {
    dir = await mkdtemp(join(tmpdir(), "rtmr-"));
    const log = new Rtmr3EventLog(join(dir, "events.json"), new SysfsRtmrExtender(join(dir, "no/rtmr3:sha384")), logger);
    await log.load();
    await log.recover();
    expect(await log.record("a", "1")).toEqual({ recorded: true, extended: false });
    expect(JSON.parse(await readFile(join(dir, "events.json"), "utf8"))).toHaveLength(1);
  });
});
