import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { createServer, isIPv6, type Server, type Socket } from "node:net";
import type { Logger } from "pino";
import type { AuthoritativeZone } from "./authoritative-zone.js";

export interface DnsServerOptions {
  listen: { host: string; port: number };
  zone: AuthoritativeZone;
  logger?: Logger;
  /** Concurrent TCP clients; further connections are refused by the kernel backlog/node. */
  maxTcpConnections?: number;
  /** A TCP client idle this long is disconnected. */
  tcpIdleMs?: number;
}

export interface DnsServer {
  host: string;
  /** The same port serves UDP and TCP. */
  port: number;
  close(): Promise<void>;
}

/** UDP datagrams larger than any sane query are dropped unread. */
const MAX_UDP_QUERY = 4096;

/** Serves `zone` on UDP and TCP at one address. With port 0 it picks a port free for both. */
export async function startDnsServer(o: DnsServerOptions): Promise<DnsServer> {
  for (let attempt = 0; ; attempt++) {
    const udp = await bindUdp(o);
    const port = (udp.address() as { port: number }).port;
    try {
      const tcp = await listenTcp(o, port);
      o.logger?.info({ host: o.listen.host, port }, "DNS server listening (UDP and TCP)");
      return {
        host: o.listen.host,
        port,
        close: async () => {
          await Promise.all([
            new Promise<void>((r) => udp.close(() => r())),
            new Promise<void>((r) => {
              tcp.server.close(() => r());
              for (const s of tcp.sockets) s.destroy();
            }),
          ]);
        },
      };
    } catch (err) {
      udp.close();
      // A random UDP port can be taken on TCP by someone else; a fixed one cannot be retried.
      if (o.listen.port !== 0 || attempt >= 5 || (err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
    }
  }
}

function bindUdp(o: DnsServerOptions): Promise<UdpSocket> {
  return new Promise((resolve, reject) => {
    const sock = createSocket({ type: isIPv6(o.listen.host) ? "udp6" : "udp4" });
    let closed = false;
    sock.once("close", () => (closed = true));
    sock.once("error", reject);
    sock.bind(o.listen.port, o.listen.host, () => {
      sock.off("error", reject);
      sock.on("error", (err) => o.logger?.warn({ err }, "DNS UDP socket error"));
      resolve(sock);
    });
    sock.on("message", (msg, rinfo) => {
      if (msg.length > MAX_UDP_QUERY) return;
      o.zone
        .respond(msg, "udp")
        .then((res) => {
          // The socket may have closed while the answer was looked up.
          if (res && !closed) sock.send(res, rinfo.port, rinfo.address, (err) => err && o.logger?.debug({ err }, "DNS UDP send failed"));
        })
        .catch((err: unknown) => o.logger?.error({ err }, "DNS query failed"));
    });
  });
}

function listenTcp(o: DnsServerOptions, port: number): Promise<{ server: Server; sockets: Set<Socket> }> {
  const sockets = new Set<Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => sock.destroy());
    sock.setTimeout(o.tcpIdleMs ?? 10_000, () => sock.destroy());
    serveTcpClient(sock, o);
  });
  server.maxConnections = o.maxTcpConnections ?? 64;
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, o.listen.host, () => {
      server.off("error", reject);
      resolve({ server, sockets });
    });
  });
}

/**
 * Length-prefixed messages (RFC 1035 §4.2.2, RFC 7766), answered one at a time: the socket is
 * paused while a query is answered, so a client cannot make us buffer more than one message.
 */
function serveTcpClient(sock: Socket, o: DnsServerOptions): void {
  let buf = Buffer.alloc(0);
  let busy = false;
  const pump = async () => {
    if (busy) return;
    busy = true;
    sock.pause();
    try {
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        const res = await o.zone.respond(Buffer.from(msg), "tcp");
        if (sock.destroyed) return;
        // Nothing sensible to say to a client that sends responses or runts: hang up.
        if (!res) return void sock.destroy();
        const frame = Buffer.alloc(2 + res.length);
        frame.writeUInt16BE(res.length);
        res.copy(frame, 2);
        sock.write(frame);
      }
    } catch (err) {
      o.logger?.error({ err }, "DNS query over TCP failed");
      sock.destroy();
    } finally {
      busy = false;
      if (!sock.destroyed) sock.resume();
    }
  };
  sock.on("data", (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    // A frame is at most 2 + 65535 bytes; anything beyond one frame waits for the pump.
    if (buf.length > 2 * 65537) return void sock.destroy();
    void pump();
  });
}
