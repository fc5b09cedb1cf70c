/**
 * TEST DOUBLE of cvm-agent, run as its own process in place of a guest (TDX cannot run here, and the
 * tiny test guest has no agent). Listens where the launch's agent channel leads and misbehaves in
 * the phase `--mode` names:
 *   mute    never answers hello (an agent that does not come up);
 *   crash   drops the connection on every setup, as an agent crash-looping before its ack would;
 *   refuse  answers setup with an error reply (the agent's refusal);
 *   stall   acknowledges setup and never reports ready;
 *   ready   reports ready with an SSH host key no sshd serves (the guest has no SSH).
 * Prints one line per setup received on stdout, so the test can count the re-sends.
 * Usage: node --import tsx agent-double.ts --listen <unix path> --mode <mode>
 */
import { parseArgs } from "node:util";
import { encodeMessage } from "../../shared/protocol/codec.js";
import type { AgentMessage } from "../../shared/protocol/messages.js";
import { AGENT_SAMPLES } from "../../shared/protocol/testdata/samples.js";
import { serveHostFrames } from "./host-frame-server.js";

export const AGENT_DOUBLE_MODES = ["mute", "crash", "refuse", "stall", "ready"] as const;
export type AgentDoubleMode = (typeof AGENT_DOUBLE_MODES)[number];

const { values: a } = parseArgs({ options: { listen: { type: "string" }, mode: { type: "string" } }, strict: true });
const mode = a.mode as AgentDoubleMode;
if (!a.listen || !AGENT_DOUBLE_MODES.includes(mode)) {
  process.stderr.write(`usage: agent-double --listen <path> --mode ${AGENT_DOUBLE_MODES.join("|")}\n`);
  process.exit(2);
}
const hello = (AGENT_SAMPLES.hello as Extract<AgentMessage, { type: "hello" }>).body;

await serveHostFrames(a.listen, (m, s) => {
  if (m.type === "hello" && mode !== "mute") s.write(encodeMessage({ type: "hello", re: m.id, body: hello }));
  if (m.type !== "setup") return;
  process.stdout.write(`setup ${m.body.instance_name}\n`);
  if (mode === "crash") s.destroy();
  else if (mode === "refuse") s.write(encodeMessage({ type: "error", re: m.id, body: { code: "invalid_request", message: "setup refused by the agent double" } }));
  else {
    s.write(encodeMessage({ type: "ack", re: m.id, body: { already_applied: false } }));
    if (mode === "ready") s.write(encodeMessage(AGENT_SAMPLES.ready));
  }
});
process.stdout.write("listening\n");
process.on("SIGTERM", () => process.exit(0));
