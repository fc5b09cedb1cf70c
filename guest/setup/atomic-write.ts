import { chmod, chown, mkdir, open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

export interface Ownership {
  uid: number;
  gid: number;
}

/** mkdir -p, then force mode and owner on the last component (mkdir's mode is subject to umask). */
export async function ensureDir(path: string, mode: number, owner?: Ownership): Promise<void> {
  await mkdir(path, { recursive: true, mode });
  await chmod(path, mode);
  if (owner) await chown(path, owner.uid, owner.gid);
}

/**
 * Writes a file so readers see either the old or the new content: temp file in the same directory,
 * mode and owner set before the content is visible, fsync, rename.
 */
export async function writeFileAtomic(path: string, data: string | Buffer, mode: number, owner?: Ownership): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  const fh = await open(tmp, "w", mode);
  try {
    await fh.chmod(mode);
    if (owner) await fh.chown(owner.uid, owner.gid);
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, path);
}
