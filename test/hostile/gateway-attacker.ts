/**
 * A hostile guest's end of the agent channel, run as its own process so that its work is not charged
 * to cvmd's event loop. It plays a root tenant who speaks the protocol just well enough to get a
 * session (hello, version 2), then opens `--streams` gateway streams and feeds each a body of
 * `--bytes-per-stream` in MAX_GATEWAY_CHUNK frames, round robin, never sending `end`. Each later wave
 * (`--waves`) reopens the streams the host refused and closed (answered) in the wave before, with
 * `--retry-bytes` each; the ones it accepted stay open. It reads what the host
 * answers (an agent that does not is cut off by the host anyway) and prints one JSON line per wave:
 * `{"wave": n, "sent": bytes, "statuses": {"429": k, ...}}`, then holds the streams open until killed.
 *
 * Usage: node --import tsx test/hostile/gateway-attacker.ts --socket PATH [--streams 64] [--bytes-per-stream 1048576] [--waves 2] [--retry-bytes 262144]
 */
import { createServer, type Socket } from "node:net";
import { parseArgs } from "node:util";
import { decodeHostMessage, encodeMessage } from "../../shared/protocol/codec.js";
import { FrameDecoder } from "../../shared/protocol/frame.js";
import { MAX_GATEWAY_CHUNK, type AgentMessage } from "../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../shared/protocol/testdata/samples.js";

const { values: o } = parseArgs({
  options: {
    socket: { type: "string" },
    streams: { type: "string", default: "64" },
    "bytes-per-stream": { type: "string", default: String(1024 * 1024) },
    waves: { type: "string", default: "2" },
    "retry-bytes": { type: "string", default: String(MAX_GATEWAY_CHUNK) },
  },
});
if (!o.socket) throw new Error("--socket is required");
const streams = Number(o.streams);
const perStream = Number(o["bytes-per-stream"]);
const waves = Number(o.waves);
const retryBytes = Number(o["retry-bytes"]);
const hello = (AGENT_SAMPLES.hello_v2 as Extract<AgentMessage, { type: "hello" }>).body;

async function write(sock: Socket, m: AgentMessage): Promise<void> {
  if (!sock.write(encodeMessage(m))) await new Promise<void>((r) => sock.once("drain", () => r()));
}

async function attack(sock: Socket, statuses: Map<number, number>, refused: Set<number>): Promise<void> {
  const chunk = Buffer.alloc(MAX_GATEWAY_CHUNK, 0x7b);
  const answered = () => refused.size;
  let ids = Array.from({ length: streams }, (_, i) => i + 1);
  for (let wave = 1; wave <= waves; wave++) {
    if (wave > 1) {
      ids = [...refused];
      refused.clear();
    }
    const before = answered();
    let sent = 0;
    const bytes = wave === 1 ? perStream : retryBytes;
    for (let off = 0; off < bytes; off += MAX_GATEWAY_CHUNK) {
      for (const stream of ids) {
        const data = chunk.subarray(0, Math.min(MAX_GATEWAY_CHUNK, bytes - off));
        if (off === 0) await write(sock, { type: "gw_request", body: { stream, method: "POST", path: "/v1/chat/completions", headers: { "content-type": "application/json" }, body: data, end: false } });
        else await write(sock, { type: "gw_request_body", body: { stream, data, end: false } });
        sent += data.length;
      }
    }
    // The host answers refused streams at once; give it a moment to answer the last ones of this wave.
    const deadline = Date.now() + 5000;
    let last = -1;
    while (Date.now() < deadline && answered() !== last) {
      last = answered();
      await new Promise((r) => setTimeout(r, 200));
    }
    process.stdout.write(`${JSON.stringify({ wave, streams: ids.length, sent, answered: answered() - before, statuses: Object.fromEntries(statuses) })}\n`);
  }
}

const server = createServer((sock) => {
  sock.on("error", () => undefined);
  const frames = new FrameDecoder();
  const statuses = new Map<number, number>();
  const refused = new Set<number>();
  sock.on("data", (c: Buffer) => {
    for (const ev of frames.push(c)) {
      if (ev.kind !== "frame") continue;
      const r = decodeHostMessage(ev.payload);
      if (!r.ok) continue;
      const m = r.message;
      if (m.type === "hello") {
        sock.write(encodeMessage({ type: "hello", re: m.id, body: { ...hello, version: 2 } }));
        void attack(sock, statuses, refused);
      } else if (m.type === "gw_response") {
        refused.add(m.body.stream);
        statuses.set(m.body.status, (statuses.get(m.body.status) ?? 0) + 1);
      }
    }
  });
});
server.listen(o.socket, () => process.stdout.write(`${JSON.stringify({ listening: o.socket })}\n`));
