import { createServer, type Server, type Socket } from "node:net";
import { decodeHostMessage } from "../../shared/protocol/codec.js";
import { FrameDecoder } from "../../shared/protocol/frame.js";
import type { HostMessage } from "../../shared/protocol/messages.js";

/**
 * TEST DOUBLE of the agent's listening end of the channel: a Unix socket server that decodes each
 * connection's host frames and hands every host message to the test's script, which answers on the
 * socket. A frame that does not decode fails the test loudly.
 */
export async function serveHostFrames(
  path: string,
  onMessage: (m: HostMessage, socket: Socket, conn: number) => void,
  onConnection?: (socket: Socket, conn: number) => void,
): Promise<{ server: Server; close(): Promise<void> }> {
  let conns = 0;
  const server = createServer((s) => {
    const conn = ++conns;
    const d = new FrameDecoder();
    s.on("error", () => undefined);
    s.on("data", (c) => {
      for (const ev of d.push(c)) {
        if (ev.kind !== "frame") continue;
        const r = decodeHostMessage(ev.payload);
        if (!r.ok) throw new Error(r.reason);
        onMessage(r.message, s, conn);
      }
    });
    onConnection?.(s, conn);
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { server, close: () => new Promise<void>((r) => server.close(() => r())) };
}
