import { createHash } from "node:crypto";
import { mkdir, open, readFile, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Logger } from "pino";
import type { Rtmr3Event } from "../../shared/protocol/messages.js";
import { eventDigest } from "./tdx-digests.js";

/** Extends RTMR3 with one SHA-384 digest. */
export interface RtmrExtender {
  /** Current RTMR3 value, or null when the interface is not present. */
  read(): Promise<Buffer | null>;
  /** Extends; returns false (without throwing) when the interface is not present. */
  extend(digest: Buffer): Promise<boolean>;
  readonly description: string;
}

/**
 * The Linux TDX guest driver's measurement-register attributes (v6.16+):
 * /sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384 reads the 48-byte value and
 * extends it when 48 bytes are written.
 */
export class SysfsRtmrExtender implements RtmrExtender {
  constructor(private readonly path: string) {}

  get description(): string {
    return this.path;
  }

  async read(): Promise<Buffer | null> {
    try {
      const v = await readFile(this.path);
      return v.length === 48 ? v : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
  }

  async extend(digest: Buffer): Promise<boolean> {
    if (digest.length !== 48) throw new RangeError("RTMR3 extend needs a 48-byte SHA-384 digest");
    let fh;
    try {
      fh = await open(this.path, "r+");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
    try {
      await fh.write(digest, 0, 48, 0);
      return true;
    } finally {
      await fh.close();
    }
  }
}

export function replayRtmr(events: readonly Rtmr3Event[]): Buffer {
  let mr: Buffer = Buffer.alloc(48);
  for (const e of events) mr = createHash("sha384").update(mr).update(Buffer.from(e.digest, "hex")).digest();
  return mr;
}

/**
 * The RTMR3 event log: a JSON array at a file under /run/cvm, appended (atomically, by rename) BEFORE
 * the register is extended and before the recorded change takes effect. A crash between append and
 * extend leaves the log one event ahead; recover() finds that by replaying and finishes the extend.
 */
export class Rtmr3EventLog {
  private events: Rtmr3Event[] = [];
  private rtmrAvailable: boolean | null = null;

  constructor(
    private readonly path: string,
    private readonly rtmr: RtmrExtender,
    private readonly logger: Logger,
  ) {}

  entries(): Rtmr3Event[] {
    return this.events.map((e) => ({ ...e }));
  }

  async load(): Promise<void> {
    try {
      const parsed = JSON.parse(await readFile(this.path, "utf8")) as unknown;
      if (!Array.isArray(parsed)) throw new Error("event log is not a JSON array");
      this.events = parsed.map((e) => {
        const o = e as Rtmr3Event;
        if (o.imr !== 3 || typeof o.event_type !== "string" || typeof o.event !== "string") throw new Error("malformed event log entry");
        if (eventDigest(o.event_type, o.event).toString("hex") !== o.digest) throw new Error(`event log entry ${o.event_type} has a wrong digest`);
        return { imr: 3, digest: o.digest, event_type: o.event_type, event: o.event };
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") this.events = [];
      else throw err;
    }
  }

  /** Reconciles the log with the register after a restart. */
  async recover(): Promise<void> {
    const current = await this.rtmr.read();
    if (current === null) {
      this.rtmrAvailable = false;
      this.logger.warn({ rtmr: this.rtmr.description }, "RTMR3 extension is unavailable (no TDX measurement interface); keeping the event log only");
      return;
    }
    this.rtmrAvailable = true;
    if (current.equals(replayRtmr(this.events))) return;
    if (this.events.length > 0 && current.equals(replayRtmr(this.events.slice(0, -1)))) {
      const last = this.events[this.events.length - 1]!;
      this.logger.warn({ event_type: last.event_type }, "event logged but not extended before a restart; extending now");
      await this.rtmr.extend(Buffer.from(last.digest, "hex"));
      return;
    }
    this.logger.error("RTMR3 does not match the event log replay; verifiers will reject this boot's quotes");
  }

  /** Records an event (idempotent: an identical event already in the log is not recorded twice). */
  async record(eventType: string, event: string): Promise<{ recorded: boolean; extended: boolean }> {
    if (this.events.some((e) => e.event_type === eventType && e.event === event)) return { recorded: false, extended: false };
    const digest = eventDigest(eventType, event);
    const entry: Rtmr3Event = { imr: 3, digest: digest.toString("hex"), event_type: eventType, event };
    const next = [...this.events, entry];
    await mkdir(dirname(this.path), { recursive: true, mode: 0o755 });
    const tmp = `${this.path}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify(next, null, 1) + "\n", { mode: 0o644 });
    const fh = await open(tmp, "r");
    await fh.sync();
    await fh.close();
    await rename(tmp, this.path);
    this.events = next;
    const extended = await this.rtmr.extend(digest);
    if (!extended && this.rtmrAvailable !== false) {
      this.rtmrAvailable = false;
      this.logger.warn({ rtmr: this.rtmr.description }, "RTMR3 extension is unavailable (no TDX measurement interface); keeping the event log only");
    }
    return { recorded: true, extended };
  }
}
