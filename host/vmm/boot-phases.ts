import { followFile, type FileFollower } from "./serial-console.js";

/** A boot phase recognised by the first serial-console line that matches its pattern. */
export interface BootMarker {
  phase: string;
  pattern: RegExp;
}

/**
 * Markers in boot order. Guest-side code (initramfs, cvm-agent) can also print `CVM-BOOT: <phase>` at any point to
 * add its own phases without changing this table.
 */
export const DEFAULT_BOOT_MARKERS: readonly BootMarker[] = Object.freeze([
  { phase: "firmware", pattern: /SeaBIOS|TDVF|EDK II|BdsDxe/ },
  { phase: "kernel", pattern: /Linux version \d/ },
  { phase: "initramfs", pattern: /Run \/init as init process|Trying to unpack rootfs/ },
  { phase: "rootfs", pattern: /VFS: Mounted root|EXT4-fs \(.*\): mounted|erofs: \(.*\): mounted|switch_root|Switching root/ },
  { phase: "systemd", pattern: /systemd\[1\]: |Welcome to / },
  { phase: "multi-user", pattern: /Reached target .*([Mm]ulti-[Uu]ser)/ },
  { phase: "agent", pattern: /cvm-agent.*(started|listening)/ },
]);

const CUSTOM_MARKER = /CVM-BOOT: ([A-Za-z0-9_.-]+)/;
const PRINTK_TIME = /^\[\s*(\d+\.\d+)\]/;

export interface BootPhaseHit {
  phase: string;
  /** The matching line, trimmed. */
  line: string;
  /** Seconds since kernel start from the printk timestamp on or before this line, when there is one. */
  kernelTime?: number;
  /** Milliseconds since the watch started (only from `watchBootPhases`). */
  atMs?: number;
}

function stripAnsi(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "");
}

/** Pure: first hit per phase in a serial log text, in order of appearance. */
export function parseBootPhases(text: string, markers: readonly BootMarker[] = DEFAULT_BOOT_MARKERS): BootPhaseHit[] {
  const parser = new BootPhaseParser(markers);
  return parser.feed(text + "\n");
}

/** Incremental variant: feed chunks as they arrive, get the phases completed by each chunk. */
export class BootPhaseParser {
  private partial = "";
  private lastKernelTime: number | undefined;
  readonly seen = new Map<string, BootPhaseHit>();

  constructor(private readonly markers: readonly BootMarker[] = DEFAULT_BOOT_MARKERS) {}

  feed(chunk: string): BootPhaseHit[] {
    const text = this.partial + chunk;
    const lines = text.split("\n");
    this.partial = lines.pop() ?? "";
    const hits: BootPhaseHit[] = [];
    for (const raw of lines) {
      const line = stripAnsi(raw).trim();
      if (!line) continue;
      const t = PRINTK_TIME.exec(line);
      if (t) this.lastKernelTime = Number(t[1]);
      const found: string[] = [];
      for (const m of this.markers) if (m.pattern.test(line)) found.push(m.phase);
      const custom = CUSTOM_MARKER.exec(line);
      if (custom) found.push(custom[1]);
      for (const phase of found) {
        if (this.seen.has(phase)) continue;
        const hit: BootPhaseHit = { phase, line, ...(this.lastKernelTime !== undefined ? { kernelTime: this.lastKernelTime } : {}) };
        this.seen.set(phase, hit);
        hits.push(hit);
      }
    }
    return hits;
  }
}

export interface BootPhaseWatch {
  /** Hits so far, in order of appearance, with `atMs` wall-clock offsets. */
  phases(): BootPhaseHit[];
  /** Resolves with the hit once `phase` appears; rejects after `timeoutMs`. */
  waitFor(phase: string, timeoutMs: number): Promise<BootPhaseHit>;
  stop(): void;
}

/**
 * Follows a serial log from `fromOffset` (the size before launch, see LaunchRecord.serialOffset) and stamps each
 * phase with the wall-clock time it appeared, relative to `startedAt` (performance.now() at launch).
 */
export function watchBootPhases(
  logPath: string,
  opts: { fromOffset?: number; startedAt?: number; markers?: readonly BootMarker[]; intervalMs?: number } = {},
): BootPhaseWatch {
  const startedAt = opts.startedAt ?? performance.now();
  const parser = new BootPhaseParser(opts.markers);
  const hits: BootPhaseHit[] = [];
  const waiters = new Set<{ phase: string; resolve: (h: BootPhaseHit) => void }>();
  const follower: FileFollower = followFile(logPath, {
    fromOffset: opts.fromOffset ?? 0,
    intervalMs: opts.intervalMs ?? 100,
    onData: (chunk) => {
      const atMs = Math.round(performance.now() - startedAt);
      for (const h of parser.feed(chunk.toString("utf8"))) {
        const stamped = { ...h, atMs };
        hits.push(stamped);
        for (const w of [...waiters]) if (w.phase === h.phase) { waiters.delete(w); w.resolve(stamped); }
      }
    },
  });
  return {
    phases: () => [...hits],
    waitFor(phase, timeoutMs) {
      const already = hits.find((h) => h.phase === phase);
      if (already) return Promise.resolve(already);
      return new Promise((resolve, reject) => {
        const w = {
          phase,
          resolve: (h: BootPhaseHit) => {
            clearTimeout(timer);
            resolve(h);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`boot phase ${phase} not seen in ${logPath} within ${timeoutMs} ms (seen: ${hits.map((h) => h.phase).join(", ") || "none"})`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
    stop: () => follower.stop(),
  };
}
