import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { FailureCode, Ready, SetupParams } from "../../shared/protocol/messages.js";
import { run as defaultRun } from "../../shared/util/run.js";
import type { Rtmr3EventLog } from "../attest/rtmr3-event-log.js";
import type { RootFs } from "../system/root-fs.js";
import { ensureDir, writeFileAtomic } from "./atomic-write.js";
import {
  configDigest,
  locateOpenClawPackage,
  ManifestError,
  readOpenClawManifest,
  renderNeutralOpenClawConfig,
  renderOpenClawConfig,
  type OpenClawManifest,
  type OpenClawPackage,
} from "./openclaw.js";
import { onlyExpectedPaths, reloadVerdict, type ReloadVerdict } from "./openclaw-reload.js";
import { TreeMismatch, verifyTree } from "./openclaw-tree.js";
import { httpOk, tcpListening, waitUntil } from "./probes.js";
import type { ServiceManager } from "./service-manager.js";
import { AuthorizedKeyInstaller, SshKeyRejected } from "./ssh-key.js";
import { readSshHostKeys } from "./ssh-host-keys.js";
import type { UserAccount, UserAccounts } from "./user-accounts.js";

/** A setup step failed; `code` is the stable failure code reported to the host. */
export class StepFailure extends Error {
  override name = "StepFailure";
  constructor(
    readonly code: FailureCode,
    message: string,
  ) {
    super(message);
  }
}

export interface SetupRunnerOptions {
  root: RootFs;
  logger: Logger;
  eventLog: Rtmr3EventLog;
  accounts: UserAccounts;
  services: ServiceManager;
  user: string;
  manifestPath: string;
  openclawPort: number;
  verifyMode: "spot" | "full";
  sshdPort: () => Promise<number>;
  sshDir: string;
  sshdTimeoutMs: number;
  openclawReadyTimeoutMs: number;
  /** How long a claim waits for OpenClaw to report that it applied the tenant configuration. */
  reloadTimeoutMs?: number;
  run?: typeof defaultRun;
}

type Step = <T>(stage: string, code: FailureCode, fn: () => Promise<T>) => Promise<T>;

/** What prepare leaves running for the claim. */
export interface PreparedOpenClaw {
  openclaw_version: string;
  node_version: string;
  /** OpenClaw's main pid when it became ready (null if the service manager cannot tell). */
  pid: number | null;
}

/** Where OpenClaw's output stood, and its pid, just before the claim wrote the tenant configuration. */
export interface ReloadWatch {
  mark: string;
  pid: number | null;
}

/** Persists the ReloadWatch so a restarted agent judges the reload from the same position. */
export interface ReloadWatchStore {
  load(): ReloadWatch | null;
  save(w: ReloadWatch): Promise<void>;
}

export type ReportProgress = (stage: string, message: string) => void | Promise<void>;

export const OPENCLAW_SERVICE = "cvm-openclaw";

/**
 * The setup, cold (`run`) or in two halves for a warm pool (`prepare` without a tenant, `claim` with
 * one), as steps that are each safe to run again (after an agent restart the whole
 * sequence is re-run with the same parameters and converges on the same state). Every step that
 * changes what the tenant trusts is recorded in the RTMR3 event log before it takes effect.
 */
export class SetupRunner {
  private readonly keys: AuthorizedKeyInstaller;

  constructor(private readonly o: SetupRunnerOptions) {
    this.keys = new AuthorizedKeyInstaller(o.root, o.accounts, o.user);
  }

  get readyzUrl(): string {
    return `http://127.0.0.1:${this.o.openclawPort}/readyz`;
  }

  /** Wraps a step so any error becomes a StepFailure with a stable code. */
  private stepper(signal?: AbortSignal) {
    return async <T>(stage: string, code: FailureCode, fn: () => Promise<T>): Promise<T> => {
      if (signal?.aborted) throw new StepFailure("setup_failed", "setup aborted");
      try {
        return await fn();
      } catch (err) {
        if (err instanceof StepFailure) throw err;
        if (err instanceof SshKeyRejected) throw new StepFailure("ssh_key_rejected", err.message);
        if (err instanceof TreeMismatch) throw new StepFailure("openclaw_digest_mismatch", err.message);
        this.o.logger.error({ err, stage }, "setup step failed");
        throw new StepFailure(code, `${stage}: ${(err as Error).message}`);
      }
    };
  }

  /** The cold path: everything at once for the tenant whose setup arrived (a VM booted for them). */
  async run(params: SetupParams, gatewayToken: string, report: ReportProgress, signal?: AbortSignal): Promise<Ready> {
    const step = this.stepper(signal);
    await this.installKey(params, step);
    await report("ssh_key", "authorized_keys written");
    const { manifest, pkg } = await this.verifyOpenClaw(step);
    await report("openclaw_verify", `OpenClaw ${manifest.version} tree verified`);
    const account = await this.writeOpenClawConfig(step, "openclaw-config", renderOpenClawConfig(params, this.o.openclawPort));
    await report("openclaw_config", "OpenClaw configuration written");
    await this.startOpenClaw(manifest, pkg, account, gatewayToken, step);
    await report("openclaw_start", "OpenClaw service started");
    const hostKeys = await this.checkSshd(step, report, signal);
    await this.waitOpenClawReady(step, signal);
    await report("openclaw_ready", "OpenClaw is ready");
    const nodeVersion = await this.nodeVersion(manifest, step);
    return { ssh_host_keys: hostKeys, openclaw_version: manifest.version, node_version: nodeVersion };
  }

  /**
   * A pool guest's preparation, before any tenant exists: verify the pinned tree, start OpenClaw with
   * the neutral configuration and wait until it is ready. Safe to run again (an agent restart re-runs
   * it; the service manager does not start a second copy).
   */
  async prepare(gatewayToken: string, report: ReportProgress, signal?: AbortSignal): Promise<PreparedOpenClaw> {
    const step = this.stepper(signal);
    const { manifest, pkg } = await this.verifyOpenClaw(step);
    await report("openclaw_verify", `OpenClaw ${manifest.version} tree verified`);
    // Only ever re-run before a claim began (the agent persists `prepared` first), so rewriting the
    // same bytes is a no-op for a running OpenClaw, and the event log keeps one entry per event.
    const account = await this.writeOpenClawConfig(step, "openclaw-config-neutral", renderNeutralOpenClawConfig(this.o.openclawPort));
    await report("openclaw_config", "neutral OpenClaw configuration written");
    await this.startOpenClaw(manifest, pkg, account, gatewayToken, step);
    await report("openclaw_start", "OpenClaw service started with the neutral configuration");
    await this.waitOpenClawReady(step, signal);
    const nodeVersion = await this.nodeVersion(manifest, step);
    const pid = await this.o.services.mainPid(OPENCLAW_SERVICE).catch(() => null);
    await report("openclaw_ready", "OpenClaw is ready");
    return { openclaw_version: manifest.version, node_version: nodeVersion, pid };
  }

  /**
   * The claim of a prepared pool guest: the tenant's key, the tenant's OpenClaw configuration (the
   * same bytes as the cold path, recorded as the same `openclaw-config` event), confirmation that the
   * running OpenClaw applied it in place (its own "config hot reload applied" log line, and the same
   * main pid as when it was prepared), sshd and /readyz.
   */
  async claim(params: SetupParams, prepared: PreparedOpenClaw, watch: ReloadWatchStore, report: ReportProgress, signal?: AbortSignal): Promise<Ready> {
    const step = this.stepper(signal);
    await this.installKey(params, step);
    await report("ssh_key", "authorized_keys written");

    const w = await step("openclaw_config", "setup_failed", async () => {
      const { account, path } = await this.openclawConfigPath();
      const text = renderOpenClawConfig(params, this.o.openclawPort);
      await this.o.eventLog.record("openclaw-config", configDigest(text));
      const saved = watch.load();
      const current = await readFile(path, "utf8").catch(() => null);
      // Resumed after an agent restart with the file already written: judge by the saved position.
      if (saved && current === text) return saved;
      const fresh: ReloadWatch = { mark: await this.o.services.outputMark(OPENCLAW_SERVICE), pid: await this.o.services.mainPid(OPENCLAW_SERVICE) };
      await watch.save(fresh);
      await writeFileAtomic(path, text, 0o600, { uid: account.uid, gid: account.gid });
      return fresh;
    });
    await report("openclaw_config", "OpenClaw configuration written");

    const applied = await step("openclaw_reload", "openclaw_start_failed", async () => {
      const t0 = Date.now();
      let verdict: ReloadVerdict = { kind: "pending" };
      await waitUntil(
        async () => {
          verdict = reloadVerdict(await this.o.services.outputSince(OPENCLAW_SERVICE, w.mark));
          return verdict.kind !== "pending";
        },
        // Each poll spawns journalctl, which competes with OpenClaw's own reload for the guest's CPU
        // (heavily so under TCG): a slower poll costs at most its interval in latency.
        { timeoutMs: this.o.reloadTimeoutMs ?? 120_000, intervalMs: 500, signal },
      );
      const v = verdict as ReloadVerdict;
      if (v.kind === "pending") throw new StepFailure("openclaw_start_failed", `OpenClaw did not report applying its configuration within ${this.o.reloadTimeoutMs ?? 120_000} ms`);
      if (v.kind === "restart") throw new StepFailure("openclaw_start_failed", `OpenClaw restarts to apply the configuration (${v.detail}); the claim expects a hot reload`);
      if (v.kind === "rejected") throw new StepFailure("openclaw_start_failed", `OpenClaw did not apply the configuration: ${v.detail}`);
      if (!onlyExpectedPaths(v.paths)) throw new StepFailure("openclaw_start_failed", `OpenClaw reloaded unexpected configuration paths: ${v.paths.join(", ")}`);
      const pid = await this.o.services.mainPid(OPENCLAW_SERVICE);
      const expectedPid = w.pid ?? prepared.pid;
      if (pid === null || (expectedPid !== null && pid !== expectedPid)) {
        throw new StepFailure("openclaw_start_failed", `OpenClaw's main process changed during the claim (${expectedPid ?? "?"} → ${pid ?? "none"})`);
      }
      this.o.logger.info({ paths: v.paths, pid, ms: Date.now() - t0 }, "OpenClaw applied the tenant configuration without a restart");
      return v.paths;
    });
    await report("openclaw_reload", `OpenClaw applied the configuration in place (${applied.join(", ")})`);

    const hostKeys = await this.checkSshd(step, report, signal);
    await this.waitOpenClawReady(step, signal);
    await report("openclaw_ready", "OpenClaw is ready");
    return { ssh_host_keys: hostKeys, openclaw_version: prepared.openclaw_version, node_version: prepared.node_version };
  }

  // ---------------------------------------------------------------------------------------------

  private async installKey(params: SetupParams, step: Step): Promise<void> {
    await step("ssh_key", "setup_failed", async () => {
      const key = this.keys.parse(params.public_key);
      await this.o.eventLog.record("ssh-authorized-key", key.fingerprint);
      const { path } = await this.keys.install(key);
      this.o.logger.info({ fingerprint: key.fingerprint, path }, "authorized key installed");
    });
  }

  private async verifyOpenClaw(step: Step): Promise<{ manifest: OpenClawManifest; pkg: OpenClawPackage }> {
    const { root, eventLog } = this.o;
    return step("openclaw_verify", "setup_failed", async () => {
      let manifest;
      try {
        manifest = await readOpenClawManifest(root, this.o.manifestPath);
      } catch (err) {
        if (err instanceof ManifestError) throw new StepFailure("openclaw_digest_mismatch", err.message);
        throw err;
      }
      const pkg = await locateOpenClawPackage(root, manifest);
      const res = await verifyTree(root.path(manifest.dir), root.path(manifest.listing), manifest.tree_digest, {
        mode: this.o.verifyMode,
        alwaysHash: pkg.keyFiles,
        sampleSize: 32,
      });
      await eventLog.record("openclaw-tree", manifest.tree_digest);
      this.o.logger.info({ tree_digest: manifest.tree_digest, ...res }, "OpenClaw tree verified");
      return { manifest, pkg };
    });
  }

  /** Records the configuration's digest in the event log, then writes it for OpenClaw's account. */
  private writeOpenClawConfig(step: Step, event: "openclaw-config" | "openclaw-config-neutral", text: string): Promise<UserAccount> {
    return step("openclaw_config", "setup_failed", async () => {
      const { account, path } = await this.openclawConfigPath();
      await this.o.eventLog.record(event, configDigest(text));
      await writeFileAtomic(path, text, 0o600, { uid: account.uid, gid: account.gid });
      return account;
    });
  }

  /** The service account (created if needed), its ~/.openclaw and the configuration file's host path. */
  private async openclawConfigPath(): Promise<{ account: UserAccount; path: string }> {
    const account = await this.o.accounts.ensure(this.o.user);
    const dir = this.o.root.path(join(account.home, ".openclaw"));
    await ensureDir(dir, 0o700, { uid: account.uid, gid: account.gid });
    return { account, path: join(dir, "openclaw.json") };
  }

  private async startOpenClaw(manifest: OpenClawManifest, pkg: OpenClawPackage, account: UserAccount, gatewayToken: string, step: Step): Promise<void> {
    await step("openclaw_start", "openclaw_start_failed", async () => {
      await this.o.services.start({
        name: OPENCLAW_SERVICE,
        description: "OpenClaw gateway (cvm)",
        exec: [manifest.node, join(pkg.packageDir, pkg.bin), "gateway", "run", "--port", String(this.o.openclawPort)],
        user: account,
        env: {
          HOME: account.home,
          OPENCLAW_CONFIG_PATH: join(account.home, ".openclaw", "openclaw.json"),
          OPENCLAW_NO_AUTO_UPDATE: "1",
          OPENCLAW_SUPERVISOR_MODE: "external",
        },
        secretEnv: { OPENCLAW_GATEWAY_TOKEN: gatewayToken },
        workingDir: account.home,
      });
    });
  }

  /** sshd listening with the key in place; returns the host keys. */
  private async checkSshd(step: Step, report: ReportProgress, signal?: AbortSignal): Promise<string[]> {
    const sshdPort = await this.o.sshdPort();
    await step("sshd_check", "sshd_unavailable", async () => {
      const ok = await waitUntil(() => tcpListening("127.0.0.1", sshdPort, 1000), { timeoutMs: this.o.sshdTimeoutMs, intervalMs: 100, signal });
      if (!ok) throw new StepFailure("sshd_unavailable", `sshd is not listening on port ${sshdPort}`);
    });
    const hostKeys = await readSshHostKeys(this.o.root, this.o.sshDir);
    if (hostKeys.length === 0) throw new StepFailure("sshd_unavailable", `no SSH host keys in ${this.o.sshDir}`);
    await report("sshd_check", `sshd listening on port ${sshdPort}`);
    return hostKeys;
  }

  private async waitOpenClawReady(step: Step, signal?: AbortSignal): Promise<void> {
    await step("openclaw_ready", "openclaw_start_failed", async () => {
      const ok = await waitUntil(() => httpOk(this.readyzUrl, 2000), { timeoutMs: this.o.openclawReadyTimeoutMs, intervalMs: 100, signal });
      if (!ok) throw new StepFailure("openclaw_start_failed", `OpenClaw did not answer ${this.readyzUrl} within ${this.o.openclawReadyTimeoutMs} ms`);
    });
  }

  private async nodeVersion(manifest: OpenClawManifest, step: Step): Promise<string> {
    return step("openclaw_ready", "openclaw_start_failed", async () => {
      const { stdout } = await (this.o.run ?? defaultRun)(this.o.root.path(manifest.node), ["--version"], { timeoutMs: 30_000 });
      return stdout.trim();
    });
  }
}
