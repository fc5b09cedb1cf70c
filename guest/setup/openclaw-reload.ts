/**
 * Confirming that a running OpenClaw applied a new configuration in place.
 *
 * OpenClaw 2026.9.6 watches its configuration file and, for each change, logs on its standard output
 * (dist/server-reload-managed-*.mjs, subsystem "reload"):
 *   config change detected; evaluating reload (<paths>)
 * followed by exactly one outcome:
 *   config hot reload applied (<paths>)                       applied in place
 *   config change applied (dynamic reads: <paths>)            applied in place (read on use)
 *   config change requires gateway restart (<paths>) — ...    the gateway restarts itself
 *   config reload skipped (invalid config): <issues>          not applied
 *   config reload disabled (gateway.reload.mode=off)          not applied
 *   config reload skipped by writer intent (...)              not applied
 * Lines carry a timestamp, a "[reload]" tag and, on a terminal or under systemd, ANSI colours.
 */

export type ReloadVerdict =
  | { kind: "pending" }
  | { kind: "applied"; paths: string[] }
  | { kind: "restart"; detail: string }
  | { kind: "rejected"; detail: string };

// CSI sequences (colours) only: that is all OpenClaw emits.
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

function paths(list: string): string[] {
  return list
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
}

/** Reads OpenClaw's output since the configuration was written and says what became of the change. */
export function reloadVerdict(output: string): ReloadVerdict {
  for (const raw of output.split("\n")) {
    const line = raw.replace(ANSI, "");
    let m: RegExpExecArray | null;
    if ((m = /config hot reload applied \(([^)]*)\)/.exec(line))) return { kind: "applied", paths: paths(m[1]!) };
    if ((m = /config change applied \(dynamic reads: ([^)]*)\)/.exec(line))) return { kind: "applied", paths: paths(m[1]!) };
    if ((m = /config change requires gateway restart \(([^)]*)\)/.exec(line))) return { kind: "restart", detail: m[1]! };
    if (/received SIGUSR[12]; restarting|restart mode: /.test(line)) return { kind: "restart", detail: line.trim().slice(0, 300) };
    if ((m = /(config reload (?:skipped|disabled)[^\n]*)/.exec(line))) return { kind: "rejected", detail: m[1]!.trim().slice(0, 300) };
    if ((m = /(config hot reload failed[^\n]*)/.exec(line))) return { kind: "rejected", detail: m[1]!.trim().slice(0, 300) };
  }
  return { kind: "pending" };
}

/**
 * The configuration paths OpenClaw reports when a pool guest's neutral configuration is replaced by
 * the tenant's (both rendered by openclaw.ts): only hot-reloadable ones.
 */
export const CLAIM_RELOAD_PATHS = ["agents.defaults.model", "models"] as const;

/** Whether every changed path OpenClaw reported lies under one the claim is meant to change. */
export function onlyExpectedPaths(reported: readonly string[], expected: readonly string[] = CLAIM_RELOAD_PATHS): boolean {
  return reported.length > 0 && reported.every((p) => expected.some((e) => p === e || p.startsWith(`${e}.`)));
}
