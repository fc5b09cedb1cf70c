import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { RootFs } from "../system/root-fs.js";

/** The SSH host public keys as "type base64" lines (comments dropped), sorted by file name. */
export async function readSshHostKeys(root: RootFs, sshDir = "/etc/ssh"): Promise<string[]> {
  const dir = root.path(sshDir);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const keys: string[] = [];
  for (const n of names.filter((x) => /^ssh_host_[a-z0-9]+_key\.pub$/.test(x)).sort()) {
    const parts = (await readFile(join(dir, n), "utf8")).trim().split(/\s+/);
    if (parts.length >= 2 && /^[a-z0-9@.-]+$/.test(parts[0]!) && /^[A-Za-z0-9+/]+=*$/.test(parts[1]!)) keys.push(`${parts[0]} ${parts[1]}`);
  }
  return keys;
}

/** The sshd port from sshd_config (first Port directive), or 22. */
export async function readSshdPort(root: RootFs, configPath: string): Promise<number> {
  try {
    const text = await readFile(root.path(configPath), "utf8");
    const m = /^\s*Port\s+(\d+)\s*$/im.exec(text);
    if (m) return Number(m[1]);
  } catch {
    /* default */
  }
  return 22;
}
