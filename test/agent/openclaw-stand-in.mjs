#!/usr/bin/env node
// Named stand-in for OpenClaw in tests: started exactly as the agent starts OpenClaw
// (`<node> <pkg>/<bin> gateway run --port N`), it reads the config the agent wrote and answers
// /readyz like the gateway does (503 while starting, 200 when ready). Like OpenClaw 2026.9.6 it
// watches the config file and prints the same "[reload]" lines: a change under `gateway` needs a
// restart (it exits), other changes are applied in place. It is not OpenClaw.
import { readFileSync, watchFile } from "node:fs";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
if (args[0] !== "gateway" || args[1] !== "run") {
  process.stderr.write(`stand-in: expected "gateway run", got ${JSON.stringify(args)}\n`);
  process.exit(2);
}
const port = Number(args[args.indexOf("--port") + 1]);
const configPath = process.env.OPENCLAW_CONFIG_PATH ?? join(process.env.HOME ?? "/nonexistent", ".openclaw", "openclaw.json");
let configText = readFileSync(configPath, "utf8");
let config = JSON.parse(configText);
// A neutral (pool) configuration has no models; a tenant one must name the cvm provider.
if (config?.gateway?.mode !== "local" || (config.models?.providers && !config.models.providers.cvm?.baseUrl)) {
  process.stderr.write("stand-in: config lacks gateway.mode=local or the cvm provider\n");
  process.exit(3);
}
if (process.env.OPENCLAW_NO_AUTO_UPDATE !== "1" || !process.env.OPENCLAW_GATEWAY_TOKEN) {
  process.stderr.write("stand-in: OPENCLAW_NO_AUTO_UPDATE or OPENCLAW_GATEWAY_TOKEN missing from the environment\n");
  process.exit(4);
}
let settings = {};
try {
  settings = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), "stand-in.json"), "utf8"));
} catch {
  /* defaults */
}
const readyAt = Date.now() + (settings.ready_delay_ms ?? 0);

/** Changed paths, one level below the top (OpenClaw reports e.g. "agents.defaults.model, models"). */
function changedPaths(a, b) {
  const out = [];
  for (const k of [...new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])].sort()) {
    if (JSON.stringify(a?.[k]) === JSON.stringify(b?.[k])) continue;
    out.push(k === "agents" ? "agents.defaults.model" : k === "gateway" ? `gateway.${Object.keys(b?.[k] ?? {}).find((x) => JSON.stringify(a?.[k]?.[x]) !== JSON.stringify(b?.[k]?.[x])) ?? "auth"}` : k);
  }
  return out;
}

watchFile(configPath, { interval: 50 }, () => {
  let text;
  try {
    text = readFileSync(configPath, "utf8");
  } catch {
    return;
  }
  if (text === configText) return;
  let next;
  try {
    next = JSON.parse(text);
  } catch (err) {
    process.stdout.write(`[reload] config reload skipped (invalid config): ${err.message}\n`);
    return;
  }
  const paths = changedPaths(config, next);
  configText = text;
  config = next;
  process.stdout.write(`\x1b[34m[reload]\x1b[39m config change detected; evaluating reload (${paths.join(", ")})\n`);
  if (paths.some((p) => p.startsWith("gateway")) || settings.reload === "restart") {
    process.stdout.write(`[reload] config change requires gateway restart (${paths.join(", ")}) — preparing\n`);
    process.exit(0);
  }
  setTimeout(() => process.stdout.write(`\x1b[34m[reload]\x1b[39m \x1b[36mconfig hot reload applied (${paths.join(", ")})\x1b[39m\n`), settings.reload_delay_ms ?? 50);
});
const server = createServer((req, res) => {
  if (req.url === "/readyz" || req.url === "/ready") {
    const ok = Date.now() >= readyAt;
    res.writeHead(ok ? 200 : 503, { "content-type": "application/json" });
    res.end(JSON.stringify({ ok, status: ok ? "ready" : "starting" }));
    return;
  }
  if (req.url === "/healthz" || req.url === "/health") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"ok":true}');
    return;
  }
  res.writeHead(404);
  res.end();
});
server.listen(port, "127.0.0.1", () => process.stdout.write(`stand-in listening on 127.0.0.1:${port} model=${config.agents?.defaults?.model?.primary}\n`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
