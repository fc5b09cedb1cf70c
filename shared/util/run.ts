import { execFile } from "node:child_process";

export interface RunOptions {
  timeoutMs?: number;
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  maxBuffer?: number;
}

/** A tool that exited non-zero, timed out or could not start; stderr is kept because it is usually the only useful part. */
export class RunError extends Error {
  constructor(
    readonly cmd: string,
    readonly args: readonly string[],
    readonly code: number | string | null,
    readonly stderr: string,
    readonly stdout: string,
  ) {
    const tail = stderr.trim().split("\n").slice(-3).join(" | ");
    super(`${cmd} ${args.join(" ")} failed (${code ?? "signal"})${tail ? `: ${tail}` : ""}`);
    this.name = "RunError";
  }
}

/** Runs a program with an argument vector (never a shell string). */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      {
        timeout: opts.timeoutMs ?? 30_000,
        env: opts.env ?? process.env,
        cwd: opts.cwd,
        maxBuffer: opts.maxBuffer ?? 64 * 1024 * 1024,
        encoding: "utf8",
      },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean };
          const code = e.killed ? "timeout" : (e.code ?? null);
          reject(new RunError(cmd, args, code, String(stderr ?? ""), String(stdout ?? "")));
          return;
        }
        resolve({ stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}
