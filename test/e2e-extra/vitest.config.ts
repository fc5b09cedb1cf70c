import { defineConfig } from "vitest/config";

// Two real VMs booted one after the other (~10 min idle under TCG): run with `make test-spoofing`.
// Not in `make test` yet: it has not passed on these machines (the victim's OpenClaw crash-looped
// under load before the attacker booted), see the issue 15 note.
export default defineConfig({
  test: {
    include: ["test/e2e-extra/**/*.test.ts"],
    testTimeout: 3_600_000,
    hookTimeout: 3_600_000,
    pool: "forks",
    fileParallelism: false,
  },
});
