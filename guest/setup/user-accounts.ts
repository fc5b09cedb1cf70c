import { readFile } from "node:fs/promises";
import { run as defaultRun } from "../../shared/util/run.js";
import type { RootFs } from "../system/root-fs.js";

export interface UserAccount {
  name: string;
  uid: number;
  gid: number;
  /** Home directory as a guest path. */
  home: string;
}

export interface UserAccounts {
  ensure(name: string): Promise<UserAccount>;
}

type Run = typeof defaultRun;

/**
 * Creates the login user with useradd when it is missing. Under a root other than "/" (tests, image
 * builds) useradd gets `--prefix <root>` so it edits that tree's /etc/passwd instead of the host's;
 * the command is otherwise the one a VM runs. Looks users up in <root>/etc/passwd directly (the guest
 * uses files-only NSS), so the answer is about the tree we write into.
 */
export class UseraddAccounts implements UserAccounts {
  constructor(
    private readonly root: RootFs,
    private readonly useradd = "useradd",
    private readonly run: Run = defaultRun,
  ) {}

  async ensure(name: string): Promise<UserAccount> {
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(name)) throw new Error(`invalid user name ${name}`);
    const existing = await this.lookup(name);
    if (existing) return existing;
    const prefix = this.root.isSystemRoot ? [] : ["--prefix", this.root.root];
    await this.run(this.useradd, [...prefix, "--create-home", "--user-group", "--shell", "/bin/bash", name], { timeoutMs: 30_000 });
    const created = await this.lookup(name);
    if (!created) throw new Error(`useradd succeeded but ${name} is not in ${this.root.path("/etc/passwd")}`);
    return created;
  }

  private async lookup(name: string): Promise<UserAccount | null> {
    let text: string;
    try {
      text = await readFile(this.root.path("/etc/passwd"), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw err;
    }
    for (const line of text.split("\n")) {
      const f = line.split(":");
      if (f[0] === name && f.length >= 7) return { name, uid: Number(f[2]), gid: Number(f[3]), home: f[5] || `/home/${name}` };
    }
    return null;
  }
}
