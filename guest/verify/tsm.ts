/**
 * configfs-tsm (Linux >= 6.7): the kernel's generic interface for TEE attestation reports.
 *   mkdir <root>/report/<entry>; write 64 bytes to inblob (REPORTDATA); read outblob (the quote);
 *   read generation (1 = nobody else wrote our entry between our write and read); rmdir.
 * Filesystem access sits behind TsmFs so tests can stand in a fake kernel tree.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rmdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";

export const DEFAULT_TSM_ROOT = "/sys/kernel/config/tsm";

export interface TsmFs {
  exists(path: string): Promise<boolean>;
  mkdir(path: string): Promise<void>;
  writeFile(path: string, data: Buffer): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  rmdir(path: string): Promise<void>;
}

export const nodeTsmFs: TsmFs = {
  async exists(path) {
    try {
      await stat(path);
      return true;
    } catch {
      return false;
    }
  },
  mkdir: async (path) => {
    await mkdir(path);
  },
  writeFile: (path, data) => writeFile(path, data),
  readFile: (path) => readFile(path),
  rmdir: (path) => rmdir(path),
};

export class TsmUnavailableError extends Error {
  override name = "TsmUnavailableError";
}

/** Something that turns 64 bytes of REPORTDATA into a quote. */
export interface QuoteProvider {
  getQuote(reportData: Buffer): Promise<Buffer>;
}

export class ConfigfsTsm implements QuoteProvider {
  constructor(
    readonly root: string = DEFAULT_TSM_ROOT,
    private readonly fs: TsmFs = nodeTsmFs,
    private readonly entryName: () => string = () => `cvm-verify-${process.pid}-${randomBytes(4).toString("hex")}`,
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
    if (reportData.length !== 64) throw new Error(`REPORTDATA must be 64 bytes, got ${reportData.length}`);
    await this.ensureAvailable();
    const dir = join(this.root, "report", this.entryName());
    await this.fs.mkdir(dir);
    try {
      const provider = (await this.fs.readFile(join(dir, "provider")).catch(() => Buffer.from(""))).toString().trim();
      // A kernel with configfs-tsm but no TDX (any other guest) registers no provider.
      if (!provider) throw new TsmUnavailableError("no TDX: configfs-tsm has no attestation provider (not a TDX guest)");
      if (provider !== "tdx_guest") {
        throw new TsmUnavailableError(`no TDX: configfs-tsm provider is "${provider}", not tdx_guest`);
      }
      await this.fs.writeFile(join(dir, "inblob"), reportData);
      const quote = await this.fs.readFile(join(dir, "outblob"));
      const generation = (await this.fs.readFile(join(dir, "generation"))).toString().trim();
      if (generation !== "1") throw new Error(`configfs-tsm entry was written concurrently (generation ${generation})`);
      if (quote.length === 0) throw new Error("configfs-tsm returned an empty quote");
      return quote;
    } finally {
      await this.fs.rmdir(dir).catch(() => undefined);
    }
  }
}
