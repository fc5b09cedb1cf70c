import { run, type RunOptions } from "../../shared/util/run.js";

/** A named network namespace (`ip netns`), and running tools inside it. */
export class Netns {
  constructor(
    readonly name: string,
    private readonly ipBinary = "ip",
  ) {}

  async exists(): Promise<boolean> {
    const { stdout } = await run(this.ipBinary, ["-j", "netns", "list"], { timeoutMs: 10_000 });
    const list = (stdout.trim() ? JSON.parse(stdout) : []) as Array<{ name: string }>;
    return list.some((n) => n.name === this.name);
  }

  /** Fails when the namespace exists: whoever creates it is the one who may mark it. */
  async create(): Promise<void> {
    await run(this.ipBinary, ["netns", "add", this.name], { timeoutMs: 10_000 });
  }

  async delete(): Promise<void> {
    if (await this.exists()) await run(this.ipBinary, ["netns", "del", this.name], { timeoutMs: 10_000 });
  }

  /** Processes whose network namespace this is, whoever started them. */
  async pids(): Promise<number[]> {
    const { stdout } = await run(this.ipBinary, ["netns", "pids", this.name], { timeoutMs: 10_000 });
    return stdout.split("\n").filter((l) => /^\d+$/.test(l.trim())).map((l) => Number(l.trim()));
  }

  /** argv prefix that runs a program inside the namespace (for detached launches such as QEMU). */
  wrap(cmd: string, args: string[]): [string, string[]] {
    return [this.ipBinary, ["netns", "exec", this.name, cmd, ...args]];
  }

  exec(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
    const [c, a] = this.wrap(cmd, args);
    return run(c, a, { timeoutMs: 10_000, ...opts });
  }

  /** `ip` inside the namespace without an extra exec: `ip -n <ns> ...`. */
  ip(args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
    return run(this.ipBinary, ["-n", this.name, ...args], { timeoutMs: 10_000, ...opts });
  }
}
