#!/usr/bin/env node
import { run } from "./program.js";

// A reader that stops early (`| head -c N`) closes the pipe: that is its choice, not a failure of
// ours, so it ends cvmctl quietly instead of as an unhandled 'error' event with a stack.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

/**
 * process.exit() drops whatever a pipe has not taken yet (a big `--json` listing was cut at the
 * pipe's 128 KiB), so the exit waits for the write callback, which runs once stdout has it all.
 */
function exitAfterFlush(code: number): void {
  process.exitCode = code;
  process.stderr.write("", () => process.stdout.write("", () => process.exit(code)));
}

run(process.argv.slice(2), process.env, { out: (l) => process.stdout.write(l + "\n"), err: (l) => process.stderr.write(l + "\n") }).then(exitAfterFlush, (err) => {
  process.stderr.write(`cvmctl: ${err instanceof Error ? err.message : String(err)}\n`);
  exitAfterFlush(1);
});
