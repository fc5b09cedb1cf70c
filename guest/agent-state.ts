import { mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { AgentPhase, Failed, Ready, SetupParams } from "../shared/protocol/messages.js";
import { validateSetupParams } from "../shared/protocol/messages.js";
import { writeFileAtomic } from "./setup/atomic-write.js";

/** What the agent must remember across its own restarts within one boot (kept on tmpfs under /run/cvm). */
export interface PersistedAgentState {
  boot_id: string;
  phase: AgentPhase;
  setup: SetupParams | null;
  setup_digest: string | null;
  stage: string | null;
  ready: Ready | null;
  failed: Failed | null;
  /** OpenClaw gateway token, generated once per boot so a re-run of the steps produces the same service. */
  gateway_token: string | null;
}

export function freshState(bootId: string): PersistedAgentState {
  return { boot_id: bootId, phase: "awaiting_setup", setup: null, setup_digest: null, stage: null, ready: null, failed: null, gateway_token: null };
}

export class AgentStateStore {
  constructor(private readonly path: string) {}

  /** The saved state if it belongs to this boot; a fresh one otherwise. */
  async load(bootId: string): Promise<PersistedAgentState> {
    let raw: string;
    try {
      raw = await readFile(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return freshState(bootId);
      throw err;
    }
    const s = JSON.parse(raw) as PersistedAgentState;
    if (s.boot_id !== bootId) return freshState(bootId);
    if (s.setup) validateSetupParams(s.setup, "saved setup");
    return s;
  }

  async save(state: PersistedAgentState): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o755 });
    await writeFileAtomic(this.path, JSON.stringify(state, null, 1) + "\n", 0o600);
  }
}
