import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import { encodeMessage, type DecodeResult } from "./codec.js";
import { FrameDecoder, type FrameEvent } from "./frame.js";
import type { AnyMessage } from "./messages.js";

/**
 * Frames handled in one turn of the event loop; the rest of a large read waits (the stream paused)
 * for the next turn, so one 64 KiB read of tiny frames cannot hold the loop for everyone else.
 */
const FRAMES_PER_TURN = 128;

/** Above this many queued bytes, events (progress, heartbeats, egress) are dropped instead of queued. */
const MAX_QUEUED_BYTES = 4 * 1024 * 1024;

export interface MessageStreamEvents<In> {
  message: [In];
  /** Bytes the framing layer dropped while resynchronising (stale or torn input). */
  skipped: [{ bytes: number; reason: string }];
  /** A complete frame whose content is not a valid message for this side. */
  invalid: [string];
  /** The underlying stream ended, errored or was destroyed. Emitted once. */
  closed: [string];
}

/**
 * Typed messages over any byte stream: framing, decoding and validation on the way in, encoding on
 * the way out. What to do about skipped bytes or invalid messages is the owner's policy (the host
 * drops the connection; the agent on virtio-serial resets the session but keeps the port).
 */
export class MessageStream<In, Out extends AnyMessage> extends EventEmitter<MessageStreamEvents<In>> {
  private readonly frames = new FrameDecoder();
  private closedReason: string | null = null;
  private paused = false;
  /** Frames read but not yet handled (a read larger than FRAMES_PER_TURN), in arrival order. */
  private backlogEvents: FrameEvent[] = [];
  private backlogAt = 0;

  constructor(
    readonly stream: Duplex,
    private readonly decode: (payload: Uint8Array) => DecodeResult<In>,
    /**
     * Asked for every complete frame (its size on the wire) before it is decoded; false drops it
     * undecoded. The host uses it to hold each guest to a budget of frames and bytes per second.
     */
    private readonly admit?: (frameBytes: number) => boolean,
  ) {
    super();
    stream.on("data", (chunk: Buffer) => this.onData(chunk));
    stream.on("end", () => this.markClosed("peer closed the stream"));
    stream.on("close", () => this.markClosed("stream closed"));
    stream.on("error", (err: Error) => this.markClosed(`stream error: ${err.message}`));
  }

  get closed(): boolean {
    return this.closedReason !== null;
  }

  /** The stream is in sync from here on: framing stops resynchronising (see FrameDecoder.strict). */
  strictFraming(): void {
    this.frames.strict = true;
  }

  /** Drops any partially received frame (used when a new host session starts on the same pipe). */
  resetInput(): void {
    this.frames.reset();
  }

  /** Stops delivering input (a session that is being torn down must not act on further messages). */
  pauseInput(): void {
    this.paused = true;
  }

  resumeInput(): void {
    this.paused = false;
  }

  /** Writes one message; returns false if it was not written (stream closed, or event shed under backpressure). */
  send(msg: Out): boolean {
    if (this.closedReason !== null || this.stream.destroyed || !this.stream.writable) return false;
    const isEvent = !("id" in msg) && !("re" in msg);
    // Gateway frames are stream data, not telemetry: losing one would corrupt a response. Their
    // senders bound them instead (per-stream sizes, concurrency, and waiting on drained()).
    if (isEvent && msg.type !== "bye" && !msg.type.startsWith("gw_") && this.stream.writableLength > MAX_QUEUED_BYTES) return false;
    try {
      this.stream.write(encodeMessage(msg));
      return true;
    } catch {
      return false;
    }
  }

  /** Bytes written but not yet taken by the underlying stream. */
  get backlog(): number {
    return this.stream.writableLength;
  }

  /** Resolves once the backlog has drained (or at once if there is none, or the stream is gone). */
  drained(): Promise<void> {
    if (this.closedReason !== null || this.stream.destroyed || !this.stream.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.stream.off("drain", done);
        this.off("closed", done);
        resolve();
      };
      this.stream.on("drain", done);
      this.on("closed", done);
    });
  }

  /** Closes the underlying stream at once; anything still queued is discarded. */
  destroy(reason: string): void {
    this.markClosed(reason);
    this.stream.destroy();
  }

  /** Closes after queued writes (e.g. a bye with the reason) are flushed; forced after `graceMs`. */
  end(reason: string, graceMs = 1000): void {
    this.markClosed(reason);
    if (this.stream.destroyed) return;
    const timer = setTimeout(() => this.stream.destroy(), graceMs);
    timer.unref();
    this.stream.once("close", () => clearTimeout(timer));
    this.stream.end(() => this.stream.destroy());
  }

  private onData(chunk: Buffer): void {
    if (this.closedReason !== null) return;
    const events = this.frames.push(chunk, this.admit);
    if (this.backlogAt < this.backlogEvents.length) {
      this.backlogEvents.push(...events);
      return;
    }
    this.backlogEvents = events;
    this.backlogAt = 0;
    this.handleSome();
  }

  /** Handles up to FRAMES_PER_TURN frames; with more waiting, pauses the stream until the next turn. */
  private handleSome(): void {
    const end = Math.min(this.backlogEvents.length, this.backlogAt + FRAMES_PER_TURN);
    while (this.backlogAt < end) {
      const ev = this.backlogEvents[this.backlogAt++]!;
      if (this.closedReason !== null) return;
      if (ev.kind === "skipped") {
        this.emit("skipped", { bytes: ev.bytes, reason: ev.reason });
        continue;
      }
      if (this.paused) continue;
      const res = this.decode(ev.payload);
      if (res.ok) this.emit("message", res.message);
      else this.emit("invalid", res.reason);
    }
    if (this.backlogAt < this.backlogEvents.length) {
      this.stream.pause();
      setImmediate(() => {
        if (this.closedReason !== null) return;
        this.handleSome();
        if (this.backlogAt >= this.backlogEvents.length) this.stream.resume();
      });
    } else {
      this.backlogEvents = [];
      this.backlogAt = 0;
    }
  }

  private markClosed(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    this.emit("closed", reason);
  }
}
