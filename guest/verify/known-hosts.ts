/**
 * known_hosts lines for an attested instance, and their installation into a known_hosts file.
 *
 * OpenSSH looks a server up as `host` on port 22 and `[host]:port` otherwise (the name as given to
 * ssh, lowercased), so a line names the instance's SSH address in that form, and its hostname with
 * the same port (which DNS resolves to that address). Installing replaces what the file said about
 * exactly those names, plain or hashed (`|1|salt|HMAC-SHA1`), so
 * a key of an earlier instance behind the same forwarded port stops being trusted; lines naming
 * other hosts, wildcards, markers (@cert-authority, @revoked) and comments are kept byte for byte.
 * The file is rewritten whole (temporary file, then rename) with its mode kept (0600 when new).
 */
import { createHmac } from "node:crypto";
import { chmod, readFile, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { canonicalHostKey } from "../../shared/tdx/index.js";

/** The name ssh looks up for host:port. */
export function hostPattern(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

/** One known_hosts line per host key ("type base64") for these names, with a comment saying where it came from. */
export function knownHostsLines(patterns: readonly string[], hostKeys: readonly string[], comment: string): string[] {
  if (/\s/.test(comment)) throw new Error("a known_hosts comment here is one word");
  const names = [...new Set(patterns)].join(",");
  return hostKeys.map((k) => `${names} ${canonicalHostKey(k)} ${comment}`);
}

/** Whether a known_hosts host field names `pattern` itself: in a comma list, or as a hashed entry. */
export function namesPattern(field: string, pattern: string): boolean {
  for (const name of field.split(",")) {
    if (name.toLowerCase() === pattern) return true;
    const hashed = /^\|1\|([A-Za-z0-9+/=]+)\|([A-Za-z0-9+/=]+)$/.exec(name);
    if (hashed) {
      const mac = createHmac("sha1", Buffer.from(hashed[1]!, "base64")).update(pattern).digest("base64");
      if (mac === hashed[2]) return true;
    }
  }
  return false;
}

/** Writes `lines` into `file` in place of what it said about any of `patterns`; returns how many lines were replaced. */
export async function installKnownHosts(file: string, patterns: readonly string[], lines: readonly string[]): Promise<{ replaced: number }> {
  // Through a symlink (a dotfiles checkout) the target is rewritten, not the link.
  const target = await realpath(file).catch(() => file);
  let old = "";
  let mode = 0o600;
  try {
    old = await readFile(target, "utf8");
    mode = (await stat(target)).mode & 0o777;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const kept: string[] = [];
  let replaced = 0;
  const oldLines = old.split("\n");
  if (oldLines[oldLines.length - 1] === "") oldLines.pop();
  for (const line of oldLines) {
    const field = line.trim().split(/\s+/)[0] ?? "";
    if (field && !field.startsWith("#") && !field.startsWith("@") && patterns.some((p) => namesPattern(field, p))) {
      replaced++;
      continue;
    }
    kept.push(line);
  }
  const tmp = `${target}.cvm-verify-${process.pid}`;
  try {
    await writeFile(tmp, [...kept, ...lines].join("\n") + "\n", { mode, flag: "wx" });
    await chmod(tmp, mode); // exactly the old mode, whatever the umask
    await rename(tmp, target);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  return { replaced };
}
