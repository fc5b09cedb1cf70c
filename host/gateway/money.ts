/**
 * Exact money for inference metering. Prices are decimal strings (USD per million tokens, at most 6
 * decimals, as the catalogue validates them), held as integer micro-dollars. A request's cost is then
 * an integer in picodollars (1e-12 USD): tokens × micro-dollars-per-million-tokens, with no rounding
 * at all. Only the total shown to a tenant is rounded, once, to cents.
 */

const PRICE = /^(\d{1,9})(?:\.(\d{1,6}))?$/;
export const PICO_PER_CENT = 10_000_000_000n;
/** SQLite integers are signed 64-bit; one request's cost must fit (about 9.2 million USD). */
export const MAX_REQUEST_PICO_USD = 2n ** 63n - 1n;

export function priceToMicroUsd(price: string): bigint {
  const m = PRICE.exec(price);
  if (!m) throw new RangeError(`not a decimal USD price: ${JSON.stringify(price)}`);
  return BigInt(m[1]!) * 1_000_000n + BigInt((m[2] ?? "").padEnd(6, "0"));
}

export interface Prices {
  /** Micro-USD per million input (prompt) tokens. */
  inputMicroUsd: bigint;
  outputMicroUsd: bigint;
}

export function requestCostPicoUsd(inputTokens: number, outputTokens: number, p: Prices): bigint {
  if (!Number.isSafeInteger(inputTokens) || !Number.isSafeInteger(outputTokens) || inputTokens < 0 || outputTokens < 0) {
    throw new RangeError("token counts must be non-negative integers");
  }
  const cost = BigInt(inputTokens) * p.inputMicroUsd + BigInt(outputTokens) * p.outputMicroUsd;
  if (cost > MAX_REQUEST_PICO_USD) throw new RangeError("request cost exceeds the metering range");
  return cost;
}

/**
 * Picodollars as USD with cents, rounded half up (0.005 → 0.01, 0.00499… → 0.00): the usual
 * commercial rule, applied once to the exact sum so per-request rounding never accumulates.
 */
export function formatUsdCents(pico: bigint): string {
  if (pico < 0n) throw new RangeError("negative amount");
  const cents = (pico + PICO_PER_CENT / 2n) / PICO_PER_CENT;
  return `${cents / 100n}.${(cents % 100n).toString().padStart(2, "0")}`;
}

/** Parses a USD amount with up to 6 decimals (e.g. a budget) into picodollars. */
export function usdToPico(usd: string): bigint {
  return priceToMicroUsd(usd) * 1_000_000n;
}

/** Picodollars as USD with 6 decimals, rounded up: an upper bound, for messages about reservations. */
export function formatUsdMicroCeil(pico: bigint): string {
  const micro = (pico + 999_999n) / 1_000_000n;
  return `${micro / 1_000_000n}.${(micro % 1_000_000n).toString().padStart(6, "0")}`;
}
