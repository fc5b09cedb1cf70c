import { Client } from "ssh2";

export interface SshHostKeyCheck {
  host: string;
  port: number;
  /** Keys as the agent reported them ("type base64 [comment]"). */
  expectedHostKeys: string[];
  timeoutMs: number;
}

export interface SshHostKeyResult {
  ok: boolean;
  /** The key the server presented, as "type base64". */
  presented?: string;
  reason?: string;
}

function blobOf(line: string): Buffer | null {
  const b64 = line.trim().split(/\s+/)[1];
  if (!b64 || !/^[A-Za-z0-9+/]+=*$/.test(b64)) return null;
  return Buffer.from(b64, "base64");
}

function typeOf(blob: Buffer): string {
  if (blob.length < 4) return "unknown";
  const n = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + n).toString("latin1");
}

/**
 * Connects to sshd and completes the key exchange only: the host key the server proves possession of
 * is compared with the keys the agent reported (and the quote binds). No authentication is attempted;
 * the connection is dropped right after the handshake.
 */
export function checkSshHostKey(opts: SshHostKeyCheck): Promise<SshHostKeyResult> {
  const expected = opts.expectedHostKeys.map(blobOf).filter((b): b is Buffer => b !== null);
  return new Promise((resolve) => {
    const client = new Client();
    let presented: string | undefined;
    let matched = false;
    let settled = false;
    const done = (r: SshHostKeyResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.removeAllListeners("error");
      client.on("error", () => undefined);
      client.end();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, presented, reason: `no SSH handshake within ${opts.timeoutMs} ms` }), opts.timeoutMs);
    client.on("handshake", () => {
      if (matched) done({ ok: true, presented });
    });
    client.on("error", (err) => {
      if (presented && !matched) done({ ok: false, presented, reason: "the server's host key is not one the agent reported" });
      else done({ ok: false, presented, reason: `SSH connection failed: ${err.message}` });
    });
    client.on("close", () => done({ ok: false, presented, reason: "connection closed before the handshake completed" }));
    client.connect({
      host: opts.host,
      port: opts.port,
      username: "cvm-host-key-probe",
      readyTimeout: opts.timeoutMs,
      // Authentication is never reached: we disconnect after the handshake.
      authHandler: (_methods: unknown, _partial: unknown, next: (m: false) => void) => next(false),
      hostVerifier: (key: Buffer) => {
        presented = `${typeOf(key)} ${key.toString("base64")}`;
        matched = expected.some((e) => e.equals(key));
        return matched;
      },
    } as unknown as Parameters<Client["connect"]>[0]);
  });
}
