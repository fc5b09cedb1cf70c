import { run, RunError } from "../../shared/util/run.js";

/** Runs the nft tool: `args` as the argument vector, `input` on stdin; resolves with stdout. */
export interface NftRunner {
  run(args: string[], input?: string): Promise<string>;
}

export interface NftCommandRunnerOptions {
  /** Network namespace (name under /run/netns) whose nftables to drive; omit for cvmd's own. */
  netns?: string;
  nftPath?: string;
  ipPath?: string;
  timeoutMs?: number;
}

/** The real nft binary, optionally entered into a named network namespace with `ip netns exec`. */
export class NftCommandRunner implements NftRunner {
  private readonly nftPath: string;
  private readonly ipPath: string;
  private readonly netns: string | undefined;
  private readonly timeoutMs: number;

  constructor(opts: NftCommandRunnerOptions = {}) {
    this.nftPath = opts.nftPath ?? "nft";
    this.ipPath = opts.ipPath ?? "ip";
    this.netns = opts.netns;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    if (this.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(this.netns)) {
      throw new Error(`netns ${JSON.stringify(this.netns)}: not a plain namespace name`);
    }
  }

  async run(args: string[], input?: string): Promise<string> {
    const [cmd, argv] =
      this.netns === undefined ? [this.nftPath, args] : [this.ipPath, ["netns", "exec", this.netns, this.nftPath, ...args]];
    const { stdout } = await run(cmd, argv, { timeoutMs: this.timeoutMs, input });
    return stdout;
  }
}

/** nft reports a missing table/chain/object as ENOENT; callers treat that as "absent", not as a failure. */
export function isNftNotFound(err: unknown): boolean {
  const text = err instanceof RunError ? err.stderr : err instanceof Error ? err.message : String(err);
  // Anchored on nft's own "Error:" line so that a missing namespace (reported by ip) is not mistaken for it.
  return /^Error: (?:Could not process rule: )?No such file or directory/m.test(text);
}
