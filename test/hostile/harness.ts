import { monitorEventLoopDelay } from "node:perf_hooks";

/**
 * Measures what a hostile guest costs cvmd while an attack runs: the event loop's worst delay, the
 * growth of resident memory, and how long tenant API requests made meanwhile take. cvmd runs in
 * this process (the real daemon, `startOpsDaemon` in test/ops/helpers.ts, which also captures the
 * security log); the attacker must run elsewhere (a child
 * process or a worker thread) so that its own work is not charged to cvmd's event loop.
 */
export interface AttackCost {
  loopDelayMaxMs: number;
  rssGrowthMiB: number;
  /** Each probe's latency, in the order made; at least one probe runs even for a short attack. */
  probeMs: number[];
}

/** The limits every hostile-guest test holds cvmd to (issue 15). */
export const ATTACK_LIMITS = { loopDelayMaxMs: 50, rssGrowthMiB: 64, probeMs: 100 } as const;

export async function measureAttack(opts: {
  attack: () => Promise<void>;
  /** A tenant API request (or any request a bystander makes) timed while the attack runs. */
  probe: () => Promise<unknown>;
  probeEveryMs?: number;
}): Promise<AttackCost> {
  globalThis.gc?.();
  const rss0 = process.memoryUsage().rss;
  let rssMax = rss0;
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  const probeMs: number[] = [];
  let done = false;
  const probes = (async () => {
    do {
      const t0 = performance.now();
      await opts.probe();
      probeMs.push(performance.now() - t0);
      rssMax = Math.max(rssMax, process.memoryUsage().rss);
      if (!done) await new Promise((r) => setTimeout(r, opts.probeEveryMs ?? 50));
    } while (!done);
  })();
  try {
    await opts.attack();
  } finally {
    done = true;
    await probes;
    h.disable();
  }
  rssMax = Math.max(rssMax, process.memoryUsage().rss);
  return { loopDelayMaxMs: h.max / 1e6, rssGrowthMiB: (rssMax - rss0) / 2 ** 20, probeMs };
}
