import { join } from "node:path";
import { parsePublicKey, type ParsedPublicKey } from "../../shared/ssh/public-key.js";
import type { RootFs } from "../system/root-fs.js";
import { ensureDir, writeFileAtomic } from "./atomic-write.js";
import type { UserAccounts } from "./user-accounts.js";

export class SshKeyRejected extends Error {
  override name = "SshKeyRejected";
}

/** Puts the tenant's key into ~user/.ssh/authorized_keys (dir 0700, file 0600, both owned by the user). */
export class AuthorizedKeyInstaller {
  constructor(
    private readonly root: RootFs,
    private readonly accounts: UserAccounts,
    readonly user: string,
  ) {}

  /** Parses the OpenSSH wire format; only ed25519 and ECDSA P-256/384/521 keys are accepted. */
  parse(publicKey: string): ParsedPublicKey {
    try {
      return parsePublicKey(publicKey);
    } catch (err) {
      throw new SshKeyRejected(`public key ${(err as Error).message}`);
    }
  }

  async install(key: ParsedPublicKey): Promise<{ path: string }> {
    const account = await this.accounts.ensure(this.user);
    const owner = { uid: account.uid, gid: account.gid };
    const sshDir = this.root.path(join(account.home, ".ssh"));
    await ensureDir(sshDir, 0o700, owner);
    const path = join(sshDir, "authorized_keys");
    await writeFileAtomic(path, key.canonical + "\n", 0o600, owner);
    return { path };
  }
}
