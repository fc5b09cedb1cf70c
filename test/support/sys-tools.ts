import { execFileSync } from "node:child_process";

/** Why a system test cannot run here (not root, or a tool that does not answer its version flag), or null. */
export function whyNotRunnable(tools: ReadonlyArray<readonly [string, readonly string[]]>): string | null {
  if (process.getuid?.() !== 0) return "not root";
  for (const [tool, args] of tools) {
    try {
      execFileSync(tool, [...args], { stdio: "ignore" });
    } catch {
      return `${tool} not installed`;
    }
  }
  return null;
}
