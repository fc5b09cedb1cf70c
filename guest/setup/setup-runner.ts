import { join } from "node:path";
import type { Logger } from "pino";
import type { FailureCode, Ready, SetupParams } from "../../shared/protocol/messages.js";
import { run as defaultRun } from "../../shared/util/run.js";
import type { Rtmr3EventLog } from "../attest/rtmr3-event-log.js";
import type { RootFs } from "../system/root-fs.js";
import { ensureDir, writeFileAtomic } from "./atomic-write.js";
import { configDigest, locateOpenClawPackage, ManifestError, readOpenClawManifest, renderOpenClawConfig } from "./openclaw.js";
import { TreeMismatch, verifyTree } from "./openclaw-tree.js";
import { httpOk, tcpListening, waitUntil } from "./probes.js";
import type { ServiceManager } from "./service-manager.js";
import { AuthorizedKeyInstaller, SshKeyRejected } from "./ssh-key.js";
import { readSshHostKeys } from "./ssh-host-keys.js";
import type { UserAccounts } from "./user-accounts.js";

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
  run?: typeof defaultRun;
}

export type ReportProgress = (stage: string, message: string) => void | Promise<void>;

export const OPENCLAW_SERVICE = "cvm-openclaw";

/**
 * The claim-time setup, as steps that are each safe to run again (after an agent restart the whole
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

  async run(params: SetupParams, gatewayToken: string, report: ReportProgress, signal?: AbortSignal): Promise<Ready> {
    const { root, eventLog } = this.o;
    const step = async <T>(stage: string, code: FailureCode, fn: () => Promise<T>): Promise<T> => {
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

    // 1. The tenant's SSH key.
    await step("ssh_key", "setup_failed", async () => {
      const key = this.keys.parse(params.public_key);
      await eventLog.record("ssh-authorized-key", key.fingerprint);
      const { path } = await this.keys.install(key);
      this.o.logger.info({ fingerprint: key.fingerprint, path }, "authorized key installed");
    });
    await report("ssh_key", "authorized_keys written");

    // 2. The pinned OpenClaw tree.
    const { manifest, pkg } = await step("openclaw_verify", "setup_failed", async () => {
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
    await report("openclaw_verify", `OpenClaw ${manifest.version} tree verified`);

    // 3. Its configuration.
    const account = await step("openclaw_config", "setup_failed", async () => {
      const account = await this.o.accounts.ensure(this.o.user);
      const owner = { uid: account.uid, gid: account.gid };
      const text = renderOpenClawConfig(params, this.o.openclawPort);
      await eventLog.record("openclaw-config", configDigest(text));
      const dir = root.path(join(account.home, ".openclaw"));
      await ensureDir(dir, 0o700, owner);
      await writeFileAtomic(join(dir, "openclaw.json"), text, 0o600, owner);
      return account;
    });
    await report("openclaw_config", "OpenClaw configuration written");

    // 4. Start it.
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
    await report("openclaw_start", "OpenClaw service started");

    // 5. Readiness: sshd listening with the key in place, OpenClaw answering /readyz.
    const sshdPort = await this.o.sshdPort();
    await step("sshd_check", "sshd_unavailable", async () => {
      const ok = await waitUntil(() => tcpListening("127.0.0.1", sshdPort, 1000), { timeoutMs: this.o.sshdTimeoutMs, intervalMs: 100, signal });
      if (!ok) throw new StepFailure("sshd_unavailable", `sshd is not listening on port ${sshdPort}`);
    });
    const hostKeys = await readSshHostKeys(root, this.o.sshDir);
    if (hostKeys.length === 0) throw new StepFailure("sshd_unavailable", `no SSH host keys in ${this.o.sshDir}`);
    await report("sshd_check", `sshd listening on port ${sshdPort}`);

    await step("openclaw_ready", "openclaw_start_failed", async () => {
      const ok = await waitUntil(() => httpOk(this.readyzUrl, 2000), { timeoutMs: this.o.openclawReadyTimeoutMs, intervalMs: 100, signal });
      if (!ok) throw new StepFailure("openclaw_start_failed", `OpenClaw did not answer ${this.readyzUrl} within ${this.o.openclawReadyTimeoutMs} ms`);
    });
    await report("openclaw_ready", "OpenClaw is ready");

    const nodeVersion = await step("openclaw_ready", "openclaw_start_failed", async () => {
      const { stdout } = await (this.o.run ?? defaultRun)(root.path(manifest.node), ["--version"], { timeoutMs: 30_000 });
      return stdout.trim();
    });
    return { ssh_host_keys: hostKeys, openclaw_version: manifest.version, node_version: nodeVersion };
  }
}
