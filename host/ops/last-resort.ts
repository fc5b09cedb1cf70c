import type { Logger } from "pino";

/** EX_SOFTWARE from sysexits.h: an internal error, told apart from a configuration error (78). */
export const EXIT_INTERNAL = 70;

/**
 * A rejection or exception nobody handled means cvmd's state is no longer known to be sound. Node's default for an
 * unhandled rejection prints to stderr only, outside the JSON log operators watch, so it is logged here, then the
 * process exits non-zero and systemd (`Restart=on-failure`) starts a fresh cvmd, which re-adopts the running guests.
 * No shutdown work is attempted: whatever threw may be what that work needs, and SQLite and the guests are both
 * safe against a sudden exit.
 */
export function installLastResortHandlers(logger: Logger, exit: (code: number) => never = process.exit): void {
  let fired = false;
  const fatal = (kind: "uncaughtException" | "unhandledRejection") => (err: unknown) => {
    if (fired) return;
    fired = true;
    try {
      logger.fatal({ err, kind }, `${kind}: cvmd exits so that its service manager restarts it`);
    } finally {
      exit(EXIT_INTERNAL);
    }
  };
  process.on("uncaughtException", fatal("uncaughtException"));
  process.on("unhandledRejection", fatal("unhandledRejection"));
}
