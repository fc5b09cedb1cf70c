import { describe, expect, test } from "vitest";
import { parseQuote } from "./quote.js";
import { allFixtures } from "./test/fixtures.js";
import { VerificationCache, verifyQuoteSync } from "./verify.js";

/**
 * Flips bytes in every signed region of every fixture quote that verifies, and requires every
 * flipped quote to fail. Header, body, signatures, attestation key, QE report and QE auth data: every
 * byte, with two masks (0xff and 0x01, the latter catching "whitespace-equivalent" changes such as
 * "\n" -> "\v"). The PCK chain: every byte with 0xff; with 0x01 every non-base64 byte (newlines,
 * armour, padding, the final NUL) and every 7th byte, to keep the run under ~30 s.
 *
 * Runs through a primed VerificationCache, so the cache keys are under test too: a flipped byte must
 * never find a cached "verified" entry. A smaller sample runs cold (no cache).
 */
const ok = allFixtures().filter((f) => f.collateral && f.expected.ok === true && f.expected.tee_type === "TDX");

describe("tamper: zero false accepts", () => {
  test("every byte of the signed regions, every fixture that verifies", () => {
    let tested = 0;
    let accepted = 0;
    const started = performance.now();
    const perRegion: Record<string, number> = {};
    ok.forEach((f) => {
      const at = f.expected.at_unix!;
      const cache = new VerificationCache();
      expect(verifyQuoteSync(f.quote, f.collateral!, { at, cache }).ok).toBe(true);
      const q = parseQuote(f.quote);
      const r = q.layout.regions;
      const positions: [string, number, number][] = [];
      for (const name of ["header", "body", "signature", "attestationKey", "qeReport", "qeReportSignature", "qeAuthData"] as const) {
        for (let i = r[name][0]; i < r[name][1]; i++) for (const mask of [0xff, 0x01]) positions.push([name, i, mask]);
      }
      const [cs, ce] = r.pckChain;
      for (let i = cs; i < ce; i++) {
        positions.push(["pckChain", i, 0xff]);
        const armour = !/[A-Za-z0-9+/]/.test(String.fromCharCode(f.quote[i]!));
        if (armour || (i - cs) % 7 === 0) positions.push(["pckChain", i, 0x01]);
      }
      const buf = Buffer.from(f.quote);
      for (const [name, i, mask] of positions) {
        buf[i]! ^= mask;
        const v = verifyQuoteSync(buf, f.collateral!, { at, cache });
        buf[i]! ^= mask;
        tested++;
        perRegion[name] = (perRegion[name] ?? 0) + 1;
        if (v.ok) {
          accepted++;
          console.error(`FALSE ACCEPT: ${f.name} ${name} offset ${i} mask ${mask}`);
        }
      }
      // the buffer is restored: still verifies
      expect(verifyQuoteSync(buf, f.collateral!, { at, cache }).ok).toBe(true);
    });
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `tamper (warm cache): ${tested} flipped quotes over ${ok.length} fixtures in ${secs}s, false accepts: ${accepted}; per region ${JSON.stringify(perRegion)}`,
    );
    expect(tested).toBeGreaterThan(40_000);
    expect(accepted).toBe(0);
  });

  test("cold sample (no cache): every 5th signed byte of one v4 and one v5 fixture", () => {
    let tested = 0;
    let accepted = 0;
    for (const name of ["tdx-v4-uptodate", "go-tdx-guest-v5-uptodate"]) {
      const f = ok.find((x) => x.name === name)!;
      const at = f.expected.at_unix!;
      const r = parseQuote(f.quote).layout.regions;
      const buf = Buffer.from(f.quote);
      for (const [s, e] of Object.values(r)) {
        for (let i = s; i < e; i += 5) {
          buf[i]! ^= 0xff;
          if (verifyQuoteSync(buf, f.collateral!, { at }).ok) accepted++;
          buf[i]! ^= 0xff;
          tested++;
        }
      }
    }
    console.log(`tamper (cold): ${tested} flipped quotes, false accepts: ${accepted}`);
    expect(tested).toBeGreaterThan(1500);
    expect(accepted).toBe(0);
  });

  test("bytes outside the signed regions (zero padding) do not change the verdict", () => {
    for (const f of ok.filter((x) => (x.expected.trailing_bytes as number) > 0)) {
      const at = f.expected.at_unix!;
      const buf = Buffer.from(f.quote);
      const end = parseQuote(buf).layout.parsedLength;
      buf.fill(0x5a, end);
      const v = verifyQuoteSync(buf, f.collateral!, { at });
      expect(v.ok).toBe(true);
      expect(v.status).toBe(f.expected.status);
    }
  });
});
