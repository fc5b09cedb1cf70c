import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigfsTsm, TsmUnavailableError } from "./tsm.js";

/**
 * A plain directory standing in for configfs-tsm (a test double: the real interface needs a TDX
 * kernel). In it a new report entry has no `provider` file, which is what a non-TDX guest whose
 * kernel has configfs-tsm shows: the verifier must say "no TDX", not fail with an I/O error.
 */
describe("ConfigfsTsm without a TDX provider", () => {
  const dirs: string[] = [];
  afterEach(() => dirs.splice(0).forEach((d) => rmSync(d, { recursive: true, force: true })));

  it("reports no TDX when the report entry has no provider", async () => {
    const root = mkdtempSync(join(tmpdir(), "tsm-"));
    dirs.push(root);
    mkdirSync(join(root, "report"));
    const tsm = new ConfigfsTsm(root);
    const err = await tsm.getQuote(Buffer.alloc(64)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TsmUnavailableError);
    expect((err as Error).message).toMatch(/^no TDX quote: configfs-tsm provider is "none", not tdx_guest/);
  });

  it("reports no TDX when configfs-tsm is absent", async () => {
    const err = await new ConfigfsTsm("/nonexistent/tsm").getQuote(Buffer.alloc(64)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TsmUnavailableError);
    expect((err as Error).message).toMatch(/not present/);
  });
});
