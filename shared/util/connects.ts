import { connect, type NetConnectOpts } from "node:net";

/** True when something accepts a connection at `target` (TCP or a unix socket) within timeoutMs. */
export function connects(target: NetConnectOpts, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(target);
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}
