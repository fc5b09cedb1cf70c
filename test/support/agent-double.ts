/**
 * TEST DOUBLE of cvm-agent, run as its own process in place of a guest (TDX cannot run here, and the
 * tiny test guest has no agent). Listens where the launch's agent channel leads, answers hello as
 * an agent awaiting setup, and then misbehaves on setup as `--mode` says:
 *   crash   drops the connection on every setup, as an agent crash-looping before its ack would;
 *   refuse  answers setup with an error reply (the agent's refusal).
 * Prints one line per setup received on stdout, so the test can count the re-sends.
 * Usage: node --import tsx agent-double.ts --listen <unix path> --mode crash|refuse
 */
import { parseArgs } from "node:util";
import { encodeMessage } from "../../shared/protocol/codec.js";
import type { AgentMessage } from "../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../shared/protocol/testdata/samples.js";
import { serveHostFrames } from "./host-frame-server.js";

const { values: a } = parseArgs({ options: { listen: { type: "string" }, mode: { type: "string" } }, strict: true });
if (!a.listen || (a.mode !== "crash" && a.mode !== "refuse")) {
  process.stderr.write("usage: agent-double --listen <path> --mode crash|refuse\n");
  process.exit(2);
}
const hello = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;

await serveHostFrames(a.listen, (m, s) => {
  if (m.type === "hello") s.write(encodeMessage({ type: "hello", re: m.id, body: hello }));
  if (m.type === "setup") {
    process.stdout.write(`setup ${m.body.instance_name}\n`);
    if (a.mode === "crash") s.destroy();
    else s.write(encodeMessage({ type: "error", re: m.id, body: { code: "invalid_request", message: "setup refused by the agent double" } }));
  }
});
process.stdout.write("listening\n");
process.on("SIGTERM", () => process.exit(0));
