/**
 * A retry loop's failures as a few instance events instead of the last reason only: consecutive attempts that failed
 * for the same reason become one event ("ssh attempts 3–17 (4–60 s): <reason>"), so a two-minute loop leaves a
 * handful of events, and the reason that kept it failing is there even when another one ended it.
 */
const MAX_REASON = 300;

export class AttemptRuns {
  private attempts = 0;
  private emitted = 0;
  private run: { first: number; last: number; fromMs: number; toMs: number; reasons: Set<string>; reason: string } | null = null;

  constructor(
    private readonly label: string,
    private readonly emit: (message: string) => void,
    /** Past this many events, the remaining attempts (reasons alternating every time) are summed up in one. */
    private readonly maxEvents = 10,
  ) {}

  /** One failed attempt; `atMs` is when it ended, counted from the loop's start. */
  failed(reason: string, atMs: number): void {
    // A reason can quote what the guest's sshd sent; it goes into an event row, so it is bounded here.
    if (reason.length > MAX_REASON) reason = `${reason.slice(0, MAX_REASON - 1)}…`;
    this.attempts++;
    const r = this.run;
    if (r && (r.reason === reason || this.emitted >= this.maxEvents - 1)) {
      r.last = this.attempts;
      r.toMs = atMs;
      r.reasons.add(reason);
      r.reason = reason;
      return;
    }
    this.flush();
    this.run = { first: this.attempts, last: this.attempts, fromMs: atMs, toMs: atMs, reasons: new Set([reason]), reason };
  }

  /** Emits the run in progress; call when the loop ends, however it ends. */
  flush(): void {
    const r = this.run;
    if (!r) return;
    this.run = null;
    this.emitted++;
    const s = (ms: number) => String(Math.round(ms / 1000));
    const which = r.first === r.last ? `${this.label} attempt ${r.first} (${s(r.toMs)} s)` : `${this.label} attempts ${r.first}–${r.last} (${s(r.fromMs)}–${s(r.toMs)} s)`;
    const why = r.reasons.size === 1 ? r.reason : `${r.reasons.size} different reasons, the last: ${r.reason}`;
    this.emit(`${which}: ${why}`);
  }
}
