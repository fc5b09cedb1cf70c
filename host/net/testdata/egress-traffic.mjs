// Traffic generator for egress-firewall.sys.test.ts, run inside a test network namespace with
// `ip netns exec <ns> node egress-traffic.mjs <mode> ...`. Every mode is bounded in count and time
// and prints one JSON line with what it observed.
import dgram from "node:dgram";
import net from "node:net";
import { writeFileSync } from "node:fs";

const [mode, ...args] = process.argv.slice(2);
const print = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function udpSend(host, port, size, count, batch, sourcePort) {
  const s = dgram.createSocket(host.includes(":") ? "udp6" : "udp4");
  // A fixed source port plays a DHCP client (68) aiming the after-block allowance elsewhere.
  if (sourcePort) await new Promise((res) => s.bind(sourcePort, res));
  const buf = Buffer.alloc(size, 0x61);
  let sent = 0;
  // Small batches with a pause keep the receiver's socket buffer from overflowing, so "received"
  // measures the firewall and not the receiver.
  while (sent < count) {
    const n = Math.min(batch, count - sent);
    await Promise.all(Array.from({ length: n }, () => new Promise((res, rej) => s.send(buf, port, host, (e) => (e ? rej(e) : res())))));
    sent += n;
    await sleep(1);
  }
  s.close();
  print({ sent });
}

function udpRecv(host, port, readyFile, idleMs, maxMs) {
  return new Promise((resolve) => {
    const s = dgram.createSocket({ type: host.includes(":") ? "udp6" : "udp4", recvBufferSize: 4 << 20 });
    let packets = 0;
    let bytes = 0;
    let last = Date.now();
    const start = Date.now();
    s.on("message", (m) => {
      packets++;
      bytes += m.length;
      last = Date.now();
    });
    s.bind(port, host, () => {
      writeFileSync(readyFile, "ready");
      const t = setInterval(() => {
        const now = Date.now();
        if (now - last >= idleMs || now - start >= maxMs) {
          clearInterval(t);
          s.close();
          print({ packets, bytes });
          resolve();
        }
      }, 20);
    });
  });
}

function tcpServe(host, port, readyFile, maxMs, limitBytes) {
  return new Promise((resolve) => {
    let written = 0;
    const chunk = Buffer.alloc(16384, 0x62);
    const socks = new Set();
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      for (const s of socks) s.destroy();
      srv.close();
      print({ written });
      resolve();
    };
    const srv = net.createServer((sock) => {
      socks.add(sock);
      sock.on("error", () => {});
      sock.on("close", () => {
        socks.delete(sock);
        // A byte-limited transfer is one connection: done when it is.
        if (limitBytes > 0) finish();
      });
      // With a byte limit the server writes exactly that much and closes, so a reader can compare.
      const pump = () => {
        while (!sock.destroyed && !sock.writableEnded) {
          const n = limitBytes > 0 ? Math.min(chunk.length, limitBytes - written) : chunk.length;
          if (n <= 0) {
            sock.end();
            return;
          }
          written += n;
          if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return;
        }
      };
      sock.on("drain", pump);
      pump();
    });
    srv.listen(port, host, () => writeFileSync(readyFile, "ready"));
    const timer = setTimeout(finish, maxMs);
  });
}

function tcpRead(host, port, durationMs, connectTimeoutMs, localPort) {
  return new Promise((resolve) => {
    let bytes = 0;
    let connected = false;
    let firstByteAt;
    const start = Date.now();
    const sock = net.connect({ host, port, ...(localPort ? { localPort } : {}) });
    let finished = false;
    let readTimer;
    const done = (error) => {
      if (finished) return;
      finished = true;
      clearTimeout(ct);
      clearTimeout(readTimer);
      sock.destroy();
      print({ connected, bytes, error: error ?? null, elapsedMs: Date.now() - start, firstByteMs: firstByteAt === undefined ? null : firstByteAt - start });
      resolve();
    };
    const ct = setTimeout(() => done("connect timeout"), connectTimeoutMs);
    sock.on("connect", () => {
      connected = true;
      clearTimeout(ct);
      readTimer = setTimeout(() => done(null), durationMs);
    });
    sock.on("end", () => done(null));
    sock.on("data", (d) => {
      if (firstByteAt === undefined) firstByteAt = Date.now();
      bytes += d.length;
    });
    sock.on("error", (e) => {
      clearTimeout(ct);
      done(String(e.code ?? e.message));
    });
  });
}

const num = (i) => Number(args[i]);
switch (mode) {
  case "udp-send":
    await udpSend(args[0], num(1), num(2), num(3), num(4) || 20, num(5) || 0);
    break;
  case "udp-recv":
    await udpRecv(args[0], num(1), args[2], num(3), num(4));
    break;
  case "tcp-serve":
    await tcpServe(args[0], num(1), args[2], num(3), num(4) || 0);
    break;
  case "tcp-read":
    await tcpRead(args[0], num(1), num(2), num(3), num(4) || 0);
    break;
  default:
    process.stderr.write(`unknown mode ${mode}\n`);
    process.exit(2);
}
