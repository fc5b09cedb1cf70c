#!/usr/bin/env node
// Named stand-in for OpenClaw in tests: started exactly as the agent starts OpenClaw
// (`<node> <pkg>/<bin> gateway run --port N`), it reads the config the agent wrote and answers
// /readyz like the gateway does (503 while starting, 200 when ready). It is not OpenClaw.
import { readFileSync } from "node:fs";
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
const config = JSON.parse(readFileSync(configPath, "utf8"));
if (config?.gateway?.mode !== "local" || !config?.models?.providers?.cvm?.baseUrl) {
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
