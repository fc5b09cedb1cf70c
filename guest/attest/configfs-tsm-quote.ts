import { mkdir, readFile, rmdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

export type QuoteResult = { available: true; quote: Buffer } | { available: false; reason: string };

/** Produces a TDX quote over 64 bytes of REPORTDATA, or says why it cannot. */
export interface QuoteProvider {
  getQuote(reportData: Buffer): Promise<QuoteResult>;
}

/** The filesystem operations configfs-tsm needs; a seam so the report protocol can be unit-tested without TDX. */
export interface TsmFs {
  exists(path: string): Promise<boolean>;
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  writeFile(path: string, data: Buffer): Promise<void>;
}

export const nodeTsmFs: TsmFs = {
  exists: async (p) => stat(p).then(() => true, () => false),
  mkdir: async (p) => void (await mkdir(p)),
  rmdir: (p) => rmdir(p),
  readFile: (p) => readFile(p),
  writeFile: (p, d) => writeFile(p, d),
};

/**
 * Quotes through configfs-tsm (/sys/kernel/config/tsm/report): make a report entry, write inblob,
 * read outblob, and check `generation` advanced by exactly one so the quote is over our inblob and
 * not over a concurrent writer's. Never fabricates a quote: without the interface or a TDX provider
 * the answer is `unavailable` with the reason.
 */
export class ConfigfsTsmQuoteProvider implements QuoteProvider {
  private chain: Promise<unknown> = Promise.resolve();
  private seq = 0;

  constructor(
    private readonly reportDir: string,
    private readonly fs: TsmFs = nodeTsmFs,
  ) {}

  getQuote(reportData: Buffer): Promise<QuoteResult> {
    const next = this.chain.then(() => this.quoteOnce(reportData));
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async quoteOnce(reportData: Buffer): Promise<QuoteResult> {
    if (reportData.length !== 64) throw new RangeError("REPORTDATA must be 64 bytes");
    if (!(await this.fs.exists(this.reportDir))) {
      return { available: false, reason: `no TDX quote interface: ${this.reportDir} is not present in this guest` };
    }
    const entry = join(this.reportDir, `cvm-agent-${process.pid}-${++this.seq}`);
    try {
      await this.fs.mkdir(entry);
    } catch (err) {
      return { available: false, reason: `configfs-tsm refused a report entry: ${(err as Error).message}` };
    }
    try {
      const provider = (await this.fs.readFile(join(entry, "provider")).catch(() => Buffer.from(""))).toString("utf8").trim();
      if (provider !== "tdx_guest") {
        return { available: false, reason: `configfs-tsm provider is ${JSON.stringify(provider || "none")}, not tdx_guest` };
      }
      const before = Number((await this.fs.readFile(join(entry, "generation"))).toString("utf8").trim());
      await this.fs.writeFile(join(entry, "inblob"), reportData);
      const quote = await this.fs.readFile(join(entry, "outblob"));
      const after = Number((await this.fs.readFile(join(entry, "generation"))).toString("utf8").trim());
      if (!Number.isInteger(before) || after !== before + 1) {
        return { available: false, reason: "configfs-tsm report entry was written concurrently; quote discarded" };
      }
      if (quote.length < 48) return { available: false, reason: `configfs-tsm returned a ${quote.length}-byte quote` };
      return { available: true, quote };
    } catch (err) {
      return { available: false, reason: `TDX quote generation failed: ${(err as Error).message}` };
    } finally {
      await this.fs.rmdir(entry).catch(() => undefined);
    }
  }
}
