#!/usr/bin/env node
/**
 * cvm-agent composition root: the only place that reads argv and the environment, builds the
 * dependencies and installs signal handlers.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pino from "pino";
import { ConfigError, integer, oneOf, parseSetting } from "../shared/config/settings.js";
import { Agent } from "./agent.js";
import { AgentStateStore } from "./agent-state.js";
import { ConfigfsTsmQuoteProvider } from "./attest/configfs-tsm-quote.js";
import { Rtmr3EventLog, SysfsRtmrExtender } from "./attest/rtmr3-event-log.js";
import { NftEgressCounter } from "./egress/nft-egress-counter.js";
import { DEFAULT_GATEWAY_LISTEN, GatewayProxyServer } from "./gateway/gateway-proxy.js";
import { SocatVsockHostTransport, UnixSocketHostTransport, VirtioSerialHostTransport, type HostTransport } from "./link/transports.js";
import { DirectServiceManager, SystemdServiceManager, type ServiceManager } from "./setup/service-manager.js";
import { SetupRunner } from "./setup/setup-runner.js";
import { readSshdPort } from "./setup/ssh-host-keys.js";
import { UseraddAccounts } from "./setup/user-accounts.js";
import { RootFs } from "./system/root-fs.js";
import { ProcSystemStats } from "./system/system-stats.js";
import { AGENT_VERSION } from "./version.js";
import { AGENT_CHANNELS, guestProfile } from "../shared/protocol/agent-channel.js";

const { values: a } = parseArgs({
  options: {
    root: { type: "string", default: "/" },
    "state-dir": { type: "string", default: "/run/cvm" },
    user: { type: "string", default: "azureuser" },
    useradd: { type: "string", default: "useradd" },
    "ssh-dir": { type: "string", default: "/etc/ssh" },
    "sshd-config": { type: "string", default: "/etc/ssh/sshd_config" },
    "sshd-port": { type: "string" },
    "sshd-timeout-ms": { type: "string", default: "60000" },
    "openclaw-manifest": { type: "string", default: "/etc/cvm/openclaw.json" },
    "openclaw-port": { type: "string", default: "18789" },
    "openclaw-verify": { type: "string", default: "spot" },
    "openclaw-ready-timeout-ms": { type: "string", default: "300000" },
    "openclaw-reload-timeout-ms": { type: "string", default: "120000" },
    "service-manager": { type: "string" },
    systemctl: { type: "string", default: "systemctl" },
    journalctl: { type: "string", default: "journalctl" },
    "unit-dir": { type: "string", default: "/run/systemd/system" },
    nft: { type: "string", default: "nft" },
    "nft-wrapper": { type: "string" },
    "no-egress": { type: "boolean", default: false },
    unix: { type: "string" },
    "virtio-port": { type: "string" },
    "vsock-port": { type: "string" },
    "vsock-socket": { type: "string" },
    socat: { type: "string", default: "socat" },
    cmdline: { type: "string", default: "/proc/cmdline" },
    "boot-id-file": { type: "string", default: "/proc/sys/kernel/random/boot_id" },
    "tsm-report-dir": { type: "string", default: "/sys/kernel/config/tsm/report" },
    "rtmr3-path": { type: "string", default: "/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384" },
    "heartbeat-ms": { type: "string", default: "5000" },
    "egress-ms": { type: "string", default: "10000" },
    "gateway-port": { type: "string", default: String(DEFAULT_GATEWAY_LISTEN.port) },
    "no-gateway": { type: "boolean", default: false },
    "log-level": { type: "string", default: process.env.CVM_AGENT_LOG_LEVEL ?? "info" },
  },
  strict: true,
});

/** Numeric flags go through the integer type cvmd's settings use: `--name=value: expected …`. */
function int(name: string, v: string | undefined, min: number, max: number): number {
  return parseSetting(`--${name}`, integer(min, max), v ?? "");
}

async function main(): Promise<void> {
  const logger = pino({ level: parseSetting("--log-level", oneOf(["fatal", "error", "warn", "info", "debug", "trace", "silent"]), a["log-level"]!), name: "cvm-agent" });
  const root = new RootFs(a.root!);
  const stateDirGuest = a["state-dir"]!;
  const stateDir = root.path(stateDirGuest);

  const cmdline = await readFile(a.cmdline!, "utf8").catch(() => "");
  const imageId = /(?:^|\s)cvm\.image=([A-Za-z0-9._:@\/+-]{1,128})(?:\s|$)/.exec(cmdline)?.[1] ?? null;
  const bootId = (await readFile(a["boot-id-file"]!, "utf8")).trim();

  const transport = selectTransport(logger, stateDir);
  const eventLog = new Rtmr3EventLog(join(stateDir, "rtmr3-events.json"), new SysfsRtmrExtender(root.path(a["rtmr3-path"]!)), logger.child({ component: "rtmr3" }));
  const accounts = new UseraddAccounts(root, a.useradd!);
  const managerKind = parseSetting("--service-manager", oneOf(["systemd", "direct"]), a["service-manager"] ?? (existsSync(root.path("/run/systemd/system")) ? "systemd" : "direct"));
  let services: ServiceManager;
  if (managerKind === "systemd") services = new SystemdServiceManager(root, { unitDir: a["unit-dir"]!, envDir: join(stateDirGuest, "env"), systemctl: a.systemctl!, journalctl: a.journalctl! });
  else services = new DirectServiceManager(root, stateDir, logger.child({ component: "service" }), root.isSystemRoot);
  const verifyMode = parseSetting("--openclaw-verify", oneOf(["spot", "full"]), a["openclaw-verify"]!);
  const sshdPortOverride = a["sshd-port"] === undefined ? null : int("sshd-port", a["sshd-port"], 1, 65535);

  const setup = new SetupRunner({
    root,
    logger: logger.child({ component: "setup" }),
    eventLog,
    accounts,
    services,
    user: a.user!,
    manifestPath: a["openclaw-manifest"]!,
    openclawPort: int("openclaw-port", a["openclaw-port"], 1, 65535),
    verifyMode,
    sshdPort: async () => sshdPortOverride ?? (await readSshdPort(root, a["sshd-config"]!)),
    sshDir: a["ssh-dir"]!,
    sshdTimeoutMs: int("sshd-timeout-ms", a["sshd-timeout-ms"], 100, 3_600_000),
    openclawReadyTimeoutMs: int("openclaw-ready-timeout-ms", a["openclaw-ready-timeout-ms"], 100, 3_600_000),
    reloadTimeoutMs: int("openclaw-reload-timeout-ms", a["openclaw-reload-timeout-ms"], 100, 3_600_000),
  });

  const nftCmd = [...(a["nft-wrapper"] ? a["nft-wrapper"].split(/\s+/).filter(Boolean) : []), a.nft!];
  const agent = new Agent({
    logger,
    identity: { agentVersion: AGENT_VERSION, bootId, imageId },
    root,
    sshDir: a["ssh-dir"]!,
    store: new AgentStateStore(join(stateDir, "agent-state.json")),
    setup,
    eventLog,
    quotes: new ConfigfsTsmQuoteProvider(root.path(a["tsm-report-dir"]!)),
    egress: a["no-egress"] ? null : new NftEgressCounter(nftCmd),
    stats: new ProcSystemStats(),
    transport,
    heartbeatMs: int("heartbeat-ms", a["heartbeat-ms"], 50, 3_600_000),
    egressMs: int("egress-ms", a["egress-ms"], 50, 3_600_000),
    // Loopback only: the gateway is for processes inside this guest, and it is billed to this instance.
    gateway: a["no-gateway"]
      ? null
      : new GatewayProxyServer({ host: DEFAULT_GATEWAY_LISTEN.host, port: int("gateway-port", a["gateway-port"], 0, 65535), logger: logger.child({ component: "gateway" }) }),
  });

  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal: sig }, "stopping");
    agent.stop().finally(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  await agent.start();
}

function selectTransport(logger: pino.Logger, stateDir: string): HostTransport {
  const chosen = [a.unix, a["virtio-port"], a["vsock-port"]].filter((x) => x !== undefined);
  if (chosen.length > 1) throw new Error("choose one of --unix, --virtio-port, --vsock-port");
  if (a.unix) return new UnixSocketHostTransport(a.unix);
  const serial = (device: string) => new VirtioSerialHostTransport(device, logger.child({ component: "virtio-serial" }));
  if (a["virtio-port"] !== undefined) return serial(a["virtio-port"]);
  // No flag: the channel of the profile this guest runs under, from the table the host builds QEMU's devices from.
  const channel = a["vsock-port"] !== undefined ? AGENT_CHANNELS.tdx : AGENT_CHANNELS[guestProfile(existsSync)];
  if (channel.kind === "virtio-serial") return serial(channel.guestDevice);
  return new SocatVsockHostTransport({
    port: a["vsock-port"] === undefined ? channel.port : int("vsock-port", a["vsock-port"], 1, 0xffffffff),
    socketPath: a["vsock-socket"] ?? join(stateDir, "agent.sock"),
    socat: a.socat,
    logger: logger.child({ component: "vsock" }),
  });
}

main().catch((err: Error) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`cvm-agent: configuration error: ${err.message}\n`);
    process.exit(78);
  }
  process.stderr.write(`cvm-agent: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
