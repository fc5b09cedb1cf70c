import { MAX_FRAME_PAYLOAD, FRAME_HEADER_LEN } from "../../shared/protocol/frame.js";
import { MAX_GATEWAY_CHUNK } from "../../shared/protocol/messages.js";

/**
 * What one guest may send the host on its agent channel, as token buckets (sustained rate + burst).
 *
 * The defaults come from what cvm-agent sends (guest/main.ts, guest/gateway/gateway-proxy.ts): a
 * heartbeat every 5 s and an egress sample every 10 s (a few hundred bytes each), a handful of
 * progress events and one ready (a quote of ~8 KB plus the event log) at setup, and inference
 * requests whose bodies the gateway caps at 4 MiB each, sent in 256 KiB chunks. One whole request
 * is 16 frames; the burst allows four at once and the rate a new one every two seconds, far above
 * what an agent waiting on a model produces, while the work cvmd does per second per guest stays
 * small (decoding a few MiB of CBOR).
 */
/** Frames in one maximum-size (4 MiB) inference request body. */
const GATEWAY_REQUEST_FRAMES = (4 * 1024 * 1024) / MAX_GATEWAY_CHUNK;

export interface ChannelBudgetLimits {
  bytesPerSec: number;
  burstBytes: number;
  framesPerSec: number;
  burstFrames: number;
}

export const DEFAULT_CHANNEL_BUDGET: ChannelBudgetLimits = {
  bytesPerSec: 2 * 1024 * 1024,
  burstBytes: 4 * GATEWAY_REQUEST_FRAMES * (MAX_GATEWAY_CHUNK + FRAME_HEADER_LEN),
  framesPerSec: 100,
  burstFrames: 500,
};

/** A frame must always fit the byte burst, or an honest maximum-size frame could never pass. */
const MIN_BURST_BYTES = MAX_FRAME_PAYLOAD + FRAME_HEADER_LEN;

export interface BudgetEpisodeEnd {
  droppedFrames: number;
  droppedBytes: number;
  startedAt: number;
}

/**
 * Admits or drops each frame a guest sends, before it is decoded. Drops are counted and grouped into
 * episodes: one starts at the first drop and ends once `quietMs` pass without one, so the security
 * log gets one line per flood, not one per frame (a steady flood that the refill lets a frame through
 * now and then is still one episode).
 */
export class ChannelBudget {
  private readonly l: ChannelBudgetLimits;
  private bytes: number;
  private frames: number;
  private at: number;
  private episode: BudgetEpisodeEnd | null = null;
  private lastDropAt = 0;
  /** Totals over the link's life. */
  droppedFrames = 0;
  droppedBytes = 0;

  constructor(
    limits: Partial<ChannelBudgetLimits> = {},
    private readonly hooks: { started(): void; ended(e: BudgetEpisodeEnd): void },
    private readonly quietMs = 10_000,
    private readonly now: () => number = () => performance.now(),
  ) {
    const l = { ...DEFAULT_CHANNEL_BUDGET, ...limits };
    this.l = { ...l, burstBytes: Math.max(l.burstBytes, MIN_BURST_BYTES) };
    this.bytes = this.l.burstBytes;
    this.frames = this.l.burstFrames;
    this.at = this.now();
  }

  get limits(): Readonly<ChannelBudgetLimits> {
    return this.l;
  }

  admit(frameBytes: number): boolean {
    const t = this.now();
    const dt = Math.max(0, t - this.at) / 1000;
    this.at = t;
    this.bytes = Math.min(this.l.burstBytes, this.bytes + dt * this.l.bytesPerSec);
    this.frames = Math.min(this.l.burstFrames, this.frames + dt * this.l.framesPerSec);
    if (this.episode && t - this.lastDropAt > this.quietMs) this.endEpisode();
    if (this.bytes >= frameBytes && this.frames >= 1) {
      this.bytes -= frameBytes;
      this.frames -= 1;
      return true;
    }
    this.droppedFrames++;
    this.droppedBytes += frameBytes;
    this.lastDropAt = t;
    if (!this.episode) {
      this.episode = { droppedFrames: 0, droppedBytes: 0, startedAt: t };
      this.hooks.started();
    }
    this.episode.droppedFrames++;
    this.episode.droppedBytes += frameBytes;
    return false;
  }

  /** Ends an open episode now (the link is closing). */
  flush(): void {
    if (this.episode) this.endEpisode();
  }

  private endEpisode(): void {
    const e = this.episode!;
    this.episode = null;
    this.hooks.ended(e);
  }
}
