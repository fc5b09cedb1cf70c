import { open, stat } from "node:fs/promises";
import path from "node:path";

import type { IPty } from "node-pty";

/** The last `maxBytes` of a serial log (for `cvmctl logs`, failure messages). Missing file reads as empty. */
export async function readSerialTail(logPath: string, maxBytes = 64 * 1024): Promise<string> {
  let fh;
  try {
    fh = await open(logPath, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw e;
  }
  try {
    const { size } = await fh.stat();
    const len = Math.min(size, maxBytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    return buf.toString("utf8");
  } finally {
    await fh.close();
  }
}

export interface FileFollower {
  stop(): void;
  /** Bytes delivered so far plus the starting offset. */
  readonly offset: number;
}

/**
 * Polls a growing file and hands new bytes to `onData`. Polling rather than fs.watch: QEMU appends from another
 * process and inotify on overlay/network filesystems is unreliable, while a stat every 100 ms costs nothing.
 */
export function followFile(
  file: string,
  opts: { fromOffset?: number; intervalMs?: number; onData: (chunk: Buffer) => void },
): FileFollower {
  let offset = opts.fromOffset ?? 0;
  let stopped = false;
  let busy = false;
  const tick = async () => {
    if (busy || stopped) return;
    busy = true;
    try {
      const st = await stat(file).catch(() => null);
      if (!st) return;
      if (st.size < offset) offset = 0; // truncated or replaced
      if (st.size === offset) return;
      const fh = await open(file, "r");
      try {
        const len = st.size - offset;
        const buf = Buffer.alloc(len);
        const { bytesRead } = await fh.read(buf, 0, len, offset);
        offset += bytesRead;
        if (bytesRead > 0 && !stopped) opts.onData(buf.subarray(0, bytesRead));
      } finally {
        await fh.close();
      }
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick(), opts.intervalMs ?? 100);
  void tick();
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
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
 */
export async function attachConsole(
  runDir: string,
  io: { stdin: NodeJS.ReadStream; stdout: NodeJS.WriteStream } = { stdin: process.stdin, stdout: process.stdout },
): Promise<number> {
  const s = await openConsole(runDir, { cols: io.stdout.columns, rows: io.stdout.rows });
  const wasRaw = io.stdin.isTTY ? io.stdin.isRaw : false;
  if (io.stdin.isTTY) io.stdin.setRawMode(true);
  s.onData((d) => io.stdout.write(d));
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
