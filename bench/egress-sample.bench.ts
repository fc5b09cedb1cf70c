/**
 * Egress firewall at 1,000 instances: one real tap device per instance (persistent `ip tuntap` taps
 * in a throwaway network namespace; netdev base chains need a device each), then:
 * - the first atomic sync() that creates everything (half the instances with restored state),
 * - a second sync() of the same set (everything exists: rules rewritten, counters kept),
 * - add()/remove() of one more instance next to the 1,000,
 * - sample(): wall time, CPU time of the nft process (ip netns exec + nft -j list counters/quotas)
 *   and CPU time of parsing in cvmd; target < 100 ms wall.
 * Run: npx vitest run --config bench/vitest.bench.config.ts bench/egress-sample.bench.ts (as root)
 */
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { randomBytes } from "node:crypto";
import { expect, test } from "vitest";
import { run } from "../shared/util/run.js";
import { NftCommandRunner } from "../host/net/nft-runner.js";
import { NftEgressFirewall, type EgressInstance } from "../host/net/egress-firewall.js";
import { parseNftTableListing } from "../host/net/nft-json.js";
import { readEgressState, sampleFromState } from "../host/net/egress-ruleset.js";
import { prerequisites } from "../test/support/prerequisites.js";

const N = 1000;
const SAMPLES = 20;
const why = prerequisites("the egress firewall bench", { root: true, tools: [["ip", ["-V"]], ["nft", ["--version"]]] });

/** CPU seconds of reaped children (ip/nft) from /proc/self/stat: cutime + cstime, in clock ticks. */
function childCpuMs(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After the command name: field 3 is index 0, so cutime (16) and cstime (17) are indices 13 and 14.
  const ticks = Number(fields[13]) + Number(fields[14]);
  return (ticks * 1000) / 100; // CLK_TCK is 100 on Linux x86-64
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; wallMs: number; childCpuMs: number }> {
  const c0 = childCpuMs();
  const t0 = performance.now();
  const value = await fn();
  return { value, wallMs: performance.now() - t0, childCpuMs: childCpuMs() - c0 };
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return `median ${q(0.5).toFixed(1)} ms, p90 ${q(0.9).toFixed(1)} ms, min ${s[0]!.toFixed(1)} ms, max ${s[s.length - 1]!.toFixed(1)} ms`;
};

test.skipIf(why !== null)(`egress firewall with ${N} instances: sync, add/remove, sample`, async () => {
  const sfx = randomBytes(3).toString("hex");
  const ns = `cvmeg-bench-${sfx}`;
  const table = "cvm_egress_bench";
  await run("ip", ["netns", "add", ns]);
  try {
    const taps = Array.from({ length: N + 1 }, (_, i) => `bt${i.toString().padStart(4, "0")}`);
    const made = await timed(() => run("ip", ["-n", ns, "-batch", "-"], { input: taps.map((t) => `tuntap add dev ${t} mode tap\n`).join(""), timeoutMs: 120_000 }));
    console.log(`created ${taps.length} tap devices in ${made.wallMs.toFixed(0)} ms`);

    const nft = new NftCommandRunner({ netns: ns, timeoutMs: 120_000 });
    const fw = new NftEgressFirewall({ nft, table });
    const instances: EgressInstance[] = taps.slice(0, N).map((tap, i) => ({
      id: `bench-${i}-${sfx}`,
      tap,
      limitBytes: 5368709120,
      restored: i % 2 === 0 ? { bytes: i * 1000, packets: i, quotaUsedBytes: i * 1000 } : undefined,
    }));

    const first = await timed(() => fw.sync(instances));
    expect(first.value.created).toHaveLength(N);
    const again = await timed(() => fw.sync(instances));
    expect(again.value).toEqual({ created: [], removed: [], raised: [] });
    const extra = { id: `bench-extra-${sfx}`, tap: taps[N]!, limitBytes: 5368709120 };
    const add = await timed(() => fw.add(extra));
    const remove = await timed(() => fw.remove(extra.id));

    // What sample() reads (objects only) and what sync()/add()/remove() read (the whole table).
    const t = ["table", "netdev", table];
    const listing = await nft.run(["-j", "list", "counters", ...t, ";", "list", "quotas", ...t]);
    const full = await timed(() => nft.run(["-j", "list", ...t]));
    const walls: number[] = [];
    let cpu = 0;
    let seen = 0;
    for (let i = 0; i < SAMPLES; i++) {
      const r = await timed(() => fw.sample());
      walls.push(r.wallMs);
      cpu += r.childCpuMs;
      seen = r.value.size;
    }
    expect(seen).toBe(N);

    const p0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < SAMPLES; i++) {
      const out = new Map();
      for (const k of readEgressState(parseNftTableListing(listing, "netdev", table)).values()) {
        const s = sampleFromState(k);
        if (s) out.set(s.id, s);
      }
      expect(out.size).toBe(N);
    }
    const parseWall = (performance.now() - t0) / SAMPLES;
    const pu = process.cpuUsage(p0);
    const parseCpu = (pu.user + pu.system) / 1000 / SAMPLES;

    const bareRuns: number[] = [];
    for (let i = 0; i < 5; i++) bareRuns.push((await timed(() => run("ip", ["netns", "exec", ns, "nft", "list", "tables"]))).wallMs);
    const bare = { wallMs: [...bareRuns].sort((a, b) => a - b)[2]! };

    console.log(
      [
        `--- egress firewall, ${N} instances (nft 1.0.6, kernel ${(await run("uname", ["-r"])).stdout.trim()}, load average ${loadavg()[0]!.toFixed(2)}) ---`,
        `sync() creating all ${N}: ${first.wallMs.toFixed(0)} ms wall, ${first.childCpuMs.toFixed(0)} ms CPU in ip/nft`,
        `sync() again, all present (rules rewritten, counters kept): ${again.wallMs.toFixed(0)} ms wall, ${again.childCpuMs.toFixed(0)} ms CPU in ip/nft`,
        `add() one next to ${N}: ${add.wallMs.toFixed(0)} ms wall; remove() one: ${remove.wallMs.toFixed(0)} ms wall`,
        `sample() x${SAMPLES}: ${stats(walls)}; ip+nft CPU ${(cpu / SAMPLES).toFixed(1)} ms per call (10 ms tick resolution, averaged)`,
        `  of which parsing ${(listing.length / 1e6).toFixed(2)} MB of JSON into ${N} samples: ${parseWall.toFixed(1)} ms wall, ${parseCpu.toFixed(1)} ms CPU per call`,
        `  floor: ip netns exec + nft list tables (nft 1.0.6 still fetches every rule): ${bare.wallMs.toFixed(1)} ms wall`,
        `  for comparison, nft -j list table (rules too, ${(full.value.length / 1e6).toFixed(2)} MB, read by sync/add/remove): ${full.wallMs.toFixed(0)} ms wall`,
      ].join("\n"),
    );
    await fw.destroy();
  } finally {
    await run("ip", ["netns", "del", ns]);
  }
});
