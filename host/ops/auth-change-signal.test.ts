import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { controlSocketPath, tellDaemonAuthChanged } from "./control-socket.js";
import { LOCK_FILE, processStartTime } from "./daemon-lock.js";

describe("tellDaemonAuthChanged (cvmctl's report of a key or tenant change)", () => {
  let dir: string;
  let server: Server | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "cvm-sig-"));
  });
  afterEach(async () => {
    if (server) await new Promise((r) => server!.close(r));
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });
  // This test process plays the running cvmd: it holds the lock and answers on the socket.
  const holdLock = () => writeFileSync(join(dir, LOCK_FILE), JSON.stringify({ pid: process.pid, start_time: processStartTime(process.pid), role: "cvmd" }));
  const listen = (status: number, seen: string[]) =>
    new Promise<void>((resolve) => {
      server = createServer((req, res) => {
        seen.push(`${req.method} ${req.url}`);
        res.writeHead(status, { "Content-Type": "application/json" }).end(JSON.stringify(status === 200 ? {} : { error: "nope" }));
      }).listen(controlSocketPath(dir), () => resolve());
    });

  it("with no cvmd there is nobody to tell", async () => {
    await expect(tellDaemonAuthChanged(dir)).resolves.toBeUndefined();
  });

  it("tells the running cvmd and waits for its answer", async () => {
    holdLock();
    const seen: string[] = [];
    await listen(200, seen);
    await tellDaemonAuthChanged(dir);
    expect(seen).toEqual(["POST /v1/auth-changed"]);
  });

  it("fails loudly when the running cvmd does not confirm", async () => {
    holdLock();
    await listen(500, []);
    await expect(tellDaemonAuthChanged(dir)).rejects.toThrow(/did not confirm/);
  });
});
