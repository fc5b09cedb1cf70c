/**
 * TDX quote verification throughput: our verifier (shared/tdx) vs @phala/dcap-qvl 0.3.9 (pure JS), on
 * the same fixture quotes and collateral, in the same process.
 *
 *   cold: every verification gets freshly parsed collateral objects and no caches (both verifiers)
 *   warm: ours with a primed VerificationCache (a host verifying many quotes of known platforms);
 *         dcap-qvl has no cache, so its figure is with reused collateral objects
 *
 * Run: npx vitest run --config bench/vitest.bench.config.ts bench/tdx-verify.bench.ts
 */
import { createRequire } from "node:module";
import { expect, test } from "vitest";
import type { Collateral } from "../shared/tdx/collateral.js";
import { allFixtures } from "../shared/tdx/test/fixtures.js";
import { QuoteVerifier, verifyQuoteSync } from "../shared/tdx/verify.js";

const dcap = createRequire(import.meta.url)("@phala/dcap-qvl") as {
  verify(q: Buffer, c: Collateral, at: number): unknown;
};

const ROUNDS = 3;
const SECONDS_PER_MEASUREMENT = 1.5;

function rate(fn: () => void, budgetS = SECONDS_PER_MEASUREMENT): number {
  for (let i = 0; i < 20; i++) fn(); // warm up the JIT
  let n = 0;
  const start = performance.now();
  const deadline = start + budgetS * 1000;
  while (performance.now() < deadline && n < 1_000_000) {
    fn();
    n++;
  }
  return (n * 1000) / (performance.now() - start);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

test("tdx-verify throughput: ours vs dcap-qvl, cold and warm", () => {
  const fixtures = allFixtures().filter((f) => f.collateral && f.expected.tee_type === "TDX");
  expect(fixtures.length).toBeGreaterThan(0);

  // Same verdicts first: a faster verifier that disagrees would be meaningless.
  for (const f of fixtures) {
    const ours = verifyQuoteSync(f.quote, f.collateral!, { at: f.expected.at_unix! });
    let theirsOk = true;
    try {
      dcap.verify(f.quote, f.collateral!, f.expected.at_unix!);
    } catch {
      theirsOk = false;
    }
    expect(ours.ok, f.name).toBe(theirsOk);
  }

  let i = 0;
  const next = () => fixtures[i++ % fixtures.length]!;
  const oursCold = () => {
    const f = next();
    verifyQuoteSync(f.quote, JSON.parse(f.collateralText!) as Collateral, { at: f.expected.at_unix! });
  };
  const dcapCold = () => {
    const f = next();
    try {
      dcap.verify(f.quote, JSON.parse(f.collateralText!) as Collateral, f.expected.at_unix!);
    } catch {
      // failing fixtures (no TCB level) throw after all signature checks: still a full verification
    }
  };
  const verifier = new QuoteVerifier();
  for (const f of fixtures) verifier.verifySync(f.quote, f.collateral!, f.expected.at_unix!);
  const oursWarm = () => {
    const f = next();
    verifier.verifySync(f.quote, f.collateral!, f.expected.at_unix!);
  };
  const dcapReused = () => {
    const f = next();
    try {
      dcap.verify(f.quote, f.collateral!, f.expected.at_unix!);
    } catch {
      // see above
    }
  };

  const r = { oursCold: [] as number[], dcapCold: [] as number[], oursWarm: [] as number[], dcapReused: [] as number[] };
  for (let round = 0; round < ROUNDS; round++) {
    // alternate the order so neither side always runs on a hotter/cooler machine
    if (round % 2 === 0) {
      r.oursCold.push(rate(oursCold));
      r.dcapCold.push(rate(dcapCold));
    } else {
      r.dcapCold.push(rate(dcapCold));
      r.oursCold.push(rate(oursCold));
    }
    r.oursWarm.push(rate(oursWarm));
    r.dcapReused.push(rate(dcapReused));
  }
  const m = { oursCold: median(r.oursCold), dcapCold: median(r.dcapCold), oursWarm: median(r.oursWarm), dcapReused: median(r.dcapReused) };
  const f1 = (x: number) => x.toFixed(1);
  console.log(`tdx-verify: ${fixtures.length} fixture quotes (${fixtures.map((f) => f.name).join(", ")}), ${ROUNDS} rounds x ${SECONDS_PER_MEASUREMENT}s, medians`);
  console.log(`  cold  ours ${f1(m.oursCold)}/s   dcap-qvl ${f1(m.dcapCold)}/s   ratio ${(m.oursCold / m.dcapCold).toFixed(2)}x (target >= 1x)`);
  console.log(`  warm  ours ${f1(m.oursWarm)}/s   dcap-qvl ${f1(m.dcapReused)}/s (no cache; reused collateral objects)   ratio ${(m.oursWarm / m.dcapReused).toFixed(2)}x; vs dcap-qvl cold ${(m.oursWarm / m.dcapCold).toFixed(2)}x (target >= 5x)`);
  console.log(`  per-round samples ${JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.map((x) => Math.round(x))])))}`);
});
