/** Who is waiting: an instance's cold start goes ahead of a pool guest's boot, whatever their order. */
export type BootKind = "instance" | "pool";

export interface BootSlot {
  /** How long the boot waited for its slot. */
  waitedMs: number;
  /** Gives the slot to the next boot in line; calling it again does nothing. */
  release(): void;
}

export interface QueuePosition {
  running: number;
  /** Boots that will start before this one. */
  ahead: number;
}

interface Waiter {
  kind: BootKind;
  since: number;
  grant(slot: BootSlot): void;
}

/**
 * Admission control for cold boots, apart from the capacity budget: a guest's boot and its agent's
 * first start are CPU-bound, and boots that share the CPU all slow down together until every one of
 * them misses its deadline (two concurrent cold starts under TCG on 2 cores: one took 733 s, the other
 * failed at 900 s). So at most `limit` boots run; the rest wait here, first come first served, with an
 * instance's cold start ahead of the warm pool's boots. A slot is held from QEMU's launch until the
 * guest is ready (or failed): the driver's deadlines start when the slot is granted.
 */
export class BootQueue {
  private running = 0;
  private readonly waiting: Waiter[] = [];

  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`boot limit must be a positive integer, got ${limit}`);
  }

  get stats(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  /** Where a boot of `kind` asking now would stand; null when it would start at once. */
  positionFor(kind: BootKind): QueuePosition | null {
    if (this.running < this.limit && this.waiting.length === 0) return null;
    const ahead = kind === "instance" ? this.waiting.filter((w) => w.kind === "instance").length : this.waiting.length;
    if (this.running < this.limit && ahead === 0) return null;
    return { running: this.running, ahead };
  }

  /**
   * Resolves with a slot when this boot may start. Rejects with the signal's reason when it is aborted
   * while waiting (a delete, shutdown); a slot already granted must be released by the caller.
   */
  acquire(kind: BootKind, signal?: AbortSignal): Promise<BootSlot> {
    signal?.throwIfAborted();
    const since = Date.now();
    if (this.running < this.limit && this.waiting.length === 0) return Promise.resolve(this.grant(since));
    return new Promise<BootSlot>((resolve, reject) => {
      const waiter: Waiter = {
        kind,
        since,
        grant: (slot) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(slot);
        },
      };
      const onAbort = () => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      // Instances go behind the last waiting instance, ahead of every waiting pool boot.
      const at = kind === "instance" ? this.waiting.findIndex((w) => w.kind === "pool") : -1;
      if (at < 0) this.waiting.push(waiter);
      else this.waiting.splice(at, 0, waiter);
    });
  }

  private grant(since: number): BootSlot {
    this.running++;
    let released = false;
    return {
      waitedMs: Date.now() - since,
      release: () => {
        if (released) return;
        released = true;
        this.running--;
        this.next();
      },
    };
  }

  private next(): void {
    while (this.running < this.limit && this.waiting.length > 0) {
      const w = this.waiting.shift()!;
      w.grant(this.grant(w.since));
    }
  }
}
