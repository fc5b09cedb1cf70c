import { execFileSync } from "node:child_process";

/** Why a system test cannot run here (not root, or a tool missing), or null; the test prints it and skips. */
export function missingTools(tools: ReadonlyArray<readonly [string, readonly string[]]>): string | null {
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
