/**
 * known_hosts lines for an attested instance, and their installation into a known_hosts file.
 *
 * OpenSSH looks a server up as `host` on port 22 and `[host]:port` otherwise (the name as given to
 * ssh, lowercased), so a line names the instance's SSH address in that form, and its hostname with
 * the same port (which DNS resolves to that address).
 *
 * Installing appends the lines. Those names come from cvmd, which the tenant does not trust, so the
 * only lines removed are earlier ones of cvm-verify's own (comment `cvm:…`) for exactly those names:
 * an API naming `github.com` as an instance's address cannot make the tenant lose its pin for it.
 * Other lines for those names (plain or hashed, `|1|salt|HMAC-SHA1`), with keys other than the ones
 * written, are kept and counted: ssh would accept those keys too, which the caller says. Everything
 * else stays byte for byte. The file is rewritten whole (temporary file, then rename) with its mode
 * kept (0600 when new).
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

export const OWN_COMMENT_PREFIX = "cvm:";

/**
 * Appends `lines` (as knownHostsLines makes them) to `file`, dropping cvm-verify's earlier lines for
 * `patterns`; `replaced` counts those, `others` the remaining lines that trust other keys for them.
 */
export async function installKnownHosts(file: string, patterns: readonly string[], lines: readonly string[]): Promise<{ replaced: number; others: number }> {
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
  const keys = new Set(lines.map((l) => l.split(" ").slice(1, 3).join(" ")));
  const kept: string[] = [];
  let replaced = 0;
  let others = 0;
  const oldLines = old.split("\n");
  if (oldLines[oldLines.length - 1] === "") oldLines.pop();
  for (const line of oldLines) {
    const [field = "", type = "", key = "", comment = ""] = line.trim().split(/\s+/);
    if (field && !field.startsWith("#") && !field.startsWith("@") && patterns.some((p) => namesPattern(field, p))) {
      if (comment.startsWith(OWN_COMMENT_PREFIX)) {
        replaced++;
        continue;
      }
      if (!keys.has(`${type} ${key}`)) others++;
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
  return { replaced, others };
}
