import { open, stat, type FileHandle } from "node:fs/promises";
import path from "node:path";

import type { IPty } from "node-pty";

/** Reads go in pieces of this size at most, whatever the file's size: a log is guest data and may be huge. */
export const READ_CHUNK_BYTES = 64 * 1024;
/** The most one `followFile` tick delivers; the rest waits for the next tick, so a big backlog cannot hog the loop. */
const MAX_BYTES_PER_TICK = 1024 * 1024;

async function openIfExists(file: string): Promise<FileHandle | null> {
  try {
    return await open(file, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

async function tailOf(file: string, maxBytes: number): Promise<Buffer> {
  const fh = await openIfExists(file);
  if (!fh) return Buffer.alloc(0);
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await fh.read(buf, got, Math.min(READ_CHUNK_BYTES, len - got), size - len + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got);
  } finally {
    await fh.close();
  }
}

/**
 * The last `maxBytes` of a serial log (for `cvmctl console --log`, failure messages), continuing into the rotated
 * `<log>.1` when the current file is shorter. Missing files read as empty. The bytes are the guest's: escape them
 * (`terminalSafe`) before they reach a terminal.
 */
export async function readSerialTail(logPath: string, maxBytes = 64 * 1024): Promise<string> {
  const cur = await tailOf(logPath, maxBytes);
  const older = cur.length < maxBytes ? await tailOf(`${logPath}.1`, maxBytes - cur.length) : Buffer.alloc(0);
  return Buffer.concat([older, cur]).toString("utf8");
}

export interface FileFollower {
  stop(): void;
  /** Bytes delivered so far from the current file plus the starting offset. */
  readonly offset: number;
}

/**
 * Polls a growing file and hands new bytes to `onData` in chunks of at most READ_CHUNK_BYTES. Polling rather than
 * fs.watch: inotify on overlay/network filesystems is unreliable, while a stat every 100 ms costs nothing. The file is
 * kept open between ticks, so a rotation (rename, new file at the path) is followed like `tail -F`: the old file is
 * read to its end, then the new one from its start.
 */
export function followFile(
  file: string,
  opts: { fromOffset?: number; intervalMs?: number; onData: (chunk: Buffer) => void },
): FileFollower {
  let offset = opts.fromOffset ?? 0;
  let fh: FileHandle | null = null;
  let ino = -1;
  let stopped = false;
  let busy = false;
  const buf = Buffer.alloc(READ_CHUNK_BYTES);
  const drop = async () => {
    const h = fh;
    fh = null;
    await h?.close().catch(() => undefined);
  };
  const tick = async () => {
    if (busy || stopped) return;
    busy = true;
    try {
      if (!fh) {
        fh = await openIfExists(file);
        if (!fh) return;
        ino = (await fh.stat()).ino;
      }
      if ((await fh.stat()).size < offset) offset = 0; // truncated in place
      let budget = MAX_BYTES_PER_TICK;
      while (budget > 0 && !stopped) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, budget), offset);
        if (bytesRead === 0) break;
        offset += bytesRead;
        budget -= bytesRead;
        opts.onData(Buffer.from(buf.subarray(0, bytesRead)));
      }
      if (budget > 0) {
        // At the end of the open file: if the path now names another file, that one is next.
        const now = await stat(file).catch(() => null);
        if (now && now.ino !== ino) {
          await drop();
          offset = 0;
        }
      }
    } catch {
      await drop();
    } finally {
      busy = false;
      if (stopped) await drop();
    }
  };
  const timer = setInterval(() => void tick(), opts.intervalMs ?? 100);
  void tick();
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
      if (!busy) void drop();
    },
    get offset() {
      return offset;
    },
  };
}

export interface ConsoleSession {
  write(data: string): void;
  onData(cb: (data: string) => void): void;
  /** Resolves with socat's exit code once the session ends. */
  readonly exited: Promise<number>;
  close(): void;
}

/**
 * An interactive session on a guest's serial console (the `console.sock` chardev of its run dir), run through socat
 * in a pseudo-terminal so line discipline and raw mode behave like a real terminal for `cvmctl console NAME`.
 * Only one client can hold the console socket at a time; the serial log keeps recording regardless.
 */
export async function openConsole(runDir: string, opts: { socatBinary?: string; cols?: number; rows?: number } = {}): Promise<ConsoleSession> {
  const { spawn } = await import("node-pty");
  const sock = path.join(runDir, "console.sock");
  const pty: IPty = spawn(opts.socatBinary ?? "socat", ["-,raw,echo=0", `UNIX-CONNECT:${sock}`], {
    name: "xterm",
    cols: opts.cols ?? 120,
    rows: opts.rows ?? 40,
    env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
  });
  const exited = new Promise<number>((resolve) => pty.onExit(({ exitCode }) => resolve(exitCode)));
  return {
    write: (d) => pty.write(d),
    onData: (cb) => {
      pty.onData(cb);
    },
    exited,
    close: () => pty.kill(),
  };
}

/**
 * Wires a console session to the calling terminal until the user types Ctrl-] (as telnet does) or the session ends.
 * `filter` rewrites guest output before it reaches the terminal (the CLI passes its escaping unless `--raw`).
 */
export async function attachConsole(
  runDir: string,
  io: { stdin: NodeJS.ReadStream; stdout: NodeJS.WriteStream } = { stdin: process.stdin, stdout: process.stdout },
  opts: { filter?: (guestOutput: string) => string } = {},
): Promise<number> {
  const s = await openConsole(runDir, { cols: io.stdout.columns, rows: io.stdout.rows });
  const wasRaw = io.stdin.isTTY ? io.stdin.isRaw : false;
  if (io.stdin.isTTY) io.stdin.setRawMode(true);
  const filter = opts.filter ?? ((d: string) => d);
  s.onData((d) => io.stdout.write(filter(d)));
  const onInput = (b: Buffer) => {
    if (b.includes(0x1d)) s.close();
    else s.write(b.toString("utf8"));
  };
  io.stdin.on("data", onInput);
  io.stdin.resume();
  try {
    return await s.exited;
  } finally {
    io.stdin.off("data", onInput);
    io.stdin.pause();
    if (io.stdin.isTTY) io.stdin.setRawMode(wasRaw);
  }
}
