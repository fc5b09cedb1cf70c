import { mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { AgentPhase, Failed, Prepared, Ready, SetupParams } from "../shared/protocol/messages.js";
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
  /** A `prepare` was accepted in this boot: this is a pool guest, and a setup is its claim. */
  pooled: boolean;
  /** Set when the preparation completed (kept after the claim). */
  prepared: Prepared | null;
  /** OpenClaw's main pid when the preparation completed. */
  prepared_pid: number | null;
  /** Where OpenClaw's output stood just before the claim wrote the tenant configuration. */
  reload_watch: { mark: string; pid: number | null } | null;
  /**
   * The egress counter's value when the claim was accepted: samples after the claim report only what
   * the guest sent since then (a pool guest's traffic before its claim belongs to no tenant).
   */
  egress_baseline: { bytes: number; packets: number } | null;
}

export function freshState(bootId: string): PersistedAgentState {
  return {
    boot_id: bootId,
    phase: "awaiting_setup",
    setup: null,
    setup_digest: null,
    stage: null,
    ready: null,
    failed: null,
    gateway_token: null,
    pooled: false,
    prepared: null,
    prepared_pid: null,
    reload_watch: null,
    egress_baseline: null,
  };
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
    // Fields added later default to their fresh values (a state file written by an older agent build).
    const s = { ...freshState(bootId), ...(JSON.parse(raw) as Partial<PersistedAgentState>) } as PersistedAgentState;
    if (s.boot_id !== bootId) return freshState(bootId);
    if (s.setup) validateSetupParams(s.setup, "saved setup");
    return s;
  }

  async save(state: PersistedAgentState): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o755 });
    await writeFileAtomic(this.path, JSON.stringify(state, null, 1) + "\n", 0o600);
  }
}
