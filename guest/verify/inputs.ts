/** Decoding the CLI's inputs: quote files in any of the forms people save them in, and times. */
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { ManifestError, parseManifest, type ImageManifest } from "../../shared/tdx/index.js";

export class InputError extends Error {
  override name = "InputError";
}

/** Raw bytes, or hex / base64 text of them (auto-detected: text is only text if every byte is printable). */
export function decodeQuoteFile(data: Buffer): Buffer {
  const printable = data.length > 0 && data.every((b) => b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b < 0x7f));
  if (!printable) return data;
  const text = data.toString("latin1").replace(/\s+/g, "");
  const hexBody = text.replace(/^0x/i, "");
  if (/^([0-9a-fA-F]{2})+$/.test(hexBody)) return Buffer.from(hexBody, "hex");
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) {
    const b = Buffer.from(text.replace(/-/g, "+").replace(/_/g, "/"), "base64");
    if (b.length > 0) return b;
  }
  throw new InputError("quote file is text but neither hex nor base64");
}

/** ISO 8601 or Unix seconds. */
export function parseTime(s: string): Date {
  if (/^\d{1,12}$/.test(s)) return new Date(Number(s) * 1000);
  if (/^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(s)) {
    const d = new Date(s);
    if (!Number.isNaN(d.getTime())) return d;
  }
  throw new InputError(`--at: "${s}" is neither ISO 8601 nor Unix seconds`);
}

export async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new InputError(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError(`${what} ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** An image manifest.json (only expected_measurements matters here). */
export async function readManifestFile(path: string): Promise<ImageManifest> {
  try {
    return parseManifest(await readJsonFile(path, "image manifest"));
  } catch (e) {
    if (e instanceof ManifestError) throw new InputError(`${path}: ${e.message}`);
    throw e;
  }
}

/** The guest's SSH host public keys (/etc/ssh/ssh_host_*_key.pub). */
export async function readHostKeys(sshDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(sshDir);
  } catch (e) {
    throw new InputError(`cannot list ${sshDir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const pubs = names.filter((n) => /^ssh_host_[a-z0-9]+_key\.pub$/.test(n)).sort();
  const keys: string[] = [];
  for (const n of pubs) {
    const line = (await readFile(join(sshDir, n), "utf8")).trim();
    if (line) keys.push(line);
  }
  if (keys.length === 0) throw new InputError(`no SSH host keys (ssh_host_*_key.pub) in ${sshDir}`);
  return keys;
}
