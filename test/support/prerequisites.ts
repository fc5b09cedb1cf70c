import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

/** What a system test needs from the machine; the first unmet need is the reason it cannot run. */
export interface Needs {
  root?: boolean;
  /** A tool and the arguments that make it answer without side effects (usually its version flag). */
  tools?: ReadonlyArray<readonly [string, readonly string[]]>;
  files?: readonly string[];
  /** A reason of the test's own (a probe this module cannot express), or null when met. */
  other?: string | null;
}

/** Set in CI, where install-deps.sh provides every prerequisite: a skip there is a broken setup, not a choice. */
export const REQUIRE_ENV = "CVM_REQUIRE_SYSTEM_TESTS";

/**
 * Why `what` cannot run here, or null. Locally a missing prerequisite prints one line and the caller
 * skips (`describe.skipIf(why !== null)`); with CVM_REQUIRE_SYSTEM_TESTS=1 it throws instead, which
 * fails the test file, so a CI machine missing a tool cannot report a green run that tested nothing.
 */
export function prerequisites(what: string, needs: Needs): string | null {
  const why = firstUnmet(needs);
  if (why === null) return null;
  const line = `${what}: ${why}`;
  if (process.env[REQUIRE_ENV] === "1") throw new Error(`${line} (${REQUIRE_ENV}=1, so this is a failure, not a skip)`);
  console.warn(`skipping ${line}`);
  return why;
}

function firstUnmet(needs: Needs): string | null {
  if (needs.root && process.getuid?.() !== 0) return "not root";
  for (const [tool, args] of needs.tools ?? []) {
    try {
      // Bounded: a tool that hangs on its version flag is as unusable as a missing one.
      execFileSync(tool, [...args], { stdio: "ignore", timeout: 10_000 });
    } catch {
      return `${tool} not installed`;
    }
  }
  for (const f of needs.files ?? []) if (!existsSync(f)) return `${f} is missing`;
  return needs.other ?? null;
}
