#!/usr/bin/env node
import { run } from "./commands.js";

run(process.argv.slice(2), process.env, { out: (l) => process.stdout.write(l + "\n"), err: (l) => process.stderr.write(l + "\n") }).then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`cvmctl: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
