/** Test-only access to the read-only DCAP fixtures in ../shared/fixtures/tdx beside the repository. */
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { parseCollateralJson, type Collateral } from "../collateral.js";

// The steering repo's shared/ sits beside this repository's root, in development and in CI.
export const FIXTURES_DIR = process.env.CVM_TDX_FIXTURES ?? new URL("../../../../shared/fixtures/tdx", import.meta.url).pathname;

export interface Expected {
  fixture: string;
  at_unix: number | null;
  ok: boolean | null;
  status: string | null;
  advisory_ids: string[] | null;
  error?: string;
  [field: string]: unknown;
}

export interface Fixture {
  name: string;
  quote: Buffer;
  collateral?: Collateral;
  collateralText?: string;
  expected: Expected;
}

export function loadFixture(name: string): Fixture {
  const dir = join(FIXTURES_DIR, name);
  const cpath = join(dir, "collateral.json");
  const text = existsSync(cpath) ? readFileSync(cpath, "utf8") : undefined;
  return {
    name,
    quote: readFileSync(join(dir, "quote.bin")),
    collateral: text ? parseCollateralJson(text) : undefined,
    collateralText: text,
    expected: JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as Expected,
  };
}

export function fixtureNames(): string[] {
  return readdirSync(FIXTURES_DIR)
    .filter((d) => existsSync(join(FIXTURES_DIR, d, "quote.bin")))
    .sort();
}

export function allFixtures(): Fixture[] {
  return fixtureNames().map(loadFixture);
}
