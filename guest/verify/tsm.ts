/**
 * cvm-verify's view of configfs-tsm (Linux >= 6.7). The report protocol itself (entry, inblob,
 * outblob, generation check, provider check) is the agent's ConfigfsTsmQuoteProvider: one
 * implementation for both programs. Here an unavailable quote becomes an error that stops the run,
 * because a verifier without a quote has nothing to verify.
 */
import { join } from "node:path";
import { ConfigfsTsmQuoteProvider, nodeTsmFs, type TsmFs } from "../attest/configfs-tsm-quote.js";

export { nodeTsmFs, type TsmFs };

export const DEFAULT_TSM_ROOT = "/sys/kernel/config/tsm";

export class TsmUnavailableError extends Error {
  override name = "TsmUnavailableError";
}

export class ConfigfsTsm {
  constructor(
    readonly root: string = DEFAULT_TSM_ROOT,
    private readonly fs: TsmFs = nodeTsmFs,
  ) {}

  /** Throws TsmUnavailableError with a reason fit for the user when there is no usable interface. */
  async ensureAvailable(): Promise<void> {
    if (!(await this.fs.exists(this.root))) {
      throw new TsmUnavailableError(`no TDX: ${this.root} not present (not a TDX guest or kernel lacks configfs-tsm)`);
    }
    if (!(await this.fs.exists(join(this.root, "report")))) {
      throw new TsmUnavailableError(`no TDX: ${this.root}/report not present (configfs-tsm without report support)`);
    }
  }

  async getQuote(reportData: Buffer): Promise<Buffer> {
    await this.ensureAvailable();
    const r = await new ConfigfsTsmQuoteProvider(join(this.root, "report"), this.fs).getQuote(reportData);
    if (!r.available) throw new TsmUnavailableError(`no TDX quote: ${r.reason}`);
    return r.quote;
  }
}
