import { isAbsolute, join, resolve } from "node:path";

/**
 * The filesystem root the agent works under: "/" in a VM, a temporary tree in tests. Every guest path
 * (configuration, home directories, /etc/ssh, /run/cvm) is resolved through it, so nothing the agent
 * writes can land outside the root it was given.
 */
export class RootFs {
  readonly root: string;

  constructor(root: string) {
    this.root = resolve(root);
  }

  get isSystemRoot(): boolean {
    return this.root === "/";
  }

  /** Host path for an absolute guest path. */
  path(guestPath: string): string {
    if (!isAbsolute(guestPath)) throw new Error(`guest path must be absolute: ${guestPath}`);
    const p = resolve(join(this.root, guestPath));
    if (p !== this.root && !p.startsWith(this.root === "/" ? "/" : this.root + "/")) throw new Error(`path escapes the root: ${guestPath}`);
    return p;
  }
}
