/**
 * TSIG interoperability with BIND's own client: `dig -y hmac-sha256:<name>:<secret>` signs a query
 * to a socket this test owns on 127.0.0.1; our verifier must accept it, and the response we sign
 * (chained to dig's MAC) must pass dig's verification.
 */
import { randomBytes } from "node:crypto";
import { createSocket, type Socket } from "node:dgram";
import dnsPacket from "dns-packet";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { run, RunError } from "../../shared/util/run.js";
import { DIG } from "../../test/dns/dig.js";
import { extractTsig, signMessage, verifyMessage, type TsigKey } from "./tsig.js";
import { prerequisites } from "../../test/support/prerequisites.js";

const skipReason = prerequisites("the TSIG tests", { tools: [DIG] });

describe.skipIf(skipReason !== null)("TSIG against dig -y", () => {
  const key: TsigKey = { name: "interop-key", secret: randomBytes(32) };
  let sock: Socket;
  let port: number;
  const seen: Array<{ ok: boolean; error?: string }> = [];
  let signResponses = true;

  beforeAll(async () => {
    sock = createSocket("udp4");
    sock.on("message", (msg, rinfo) => {
      const verdict = verifyMessage(msg, key, { now: new Date() });
      seen.push(verdict.ok ? { ok: true } : { ok: false, error: verdict.error });
      const q = dnsPacket.decode(msg);
      const response = dnsPacket.encode({
        id: q.id,
        type: "response",
        flags: dnsPacket.AUTHORITATIVE_ANSWER,
        questions: q.questions,
        answers: [{ name: q.questions![0]!.name, type: "A", ttl: 5, data: "127.0.0.1" }],
      });
      const requestMac = extractTsig(msg)?.tsig.mac;
      const out = signResponses && verdict.ok ? signMessage(response, key, { now: new Date(), requestMac }).message : response;
      sock.send(out, rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
    port = sock.address().port;
  });
  afterAll(() => sock?.close());

  const digSigned = async (secret: Buffer) => {
    try {
      const { stdout } = await run("dig", [`@127.0.0.1`, "-p", String(port), "-y", `hmac-sha256:${key.name}:${secret.toString("base64")}`, "abcdefgh.acme.cvm.test", "A", "+time=2", "+tries=1"], { timeoutMs: 15_000 });
      return stdout;
    } catch (err) {
      return err instanceof RunError ? err.stdout + err.stderr : String(err);
    }
  };

  test("dig's signed query verifies; our signed response passes dig's check", async () => {
    const out = await digSigned(key.secret);
    expect(seen.pop()).toEqual({ ok: true });
    expect(out).toMatch(/status: NOERROR/);
    expect(out).toMatch(/TSIG PSEUDOSECTION/);
    expect(out).not.toMatch(/Couldn't verify|failure/i);
  });

  test("a query signed with another secret does not verify", async () => {
    signResponses = false;
    await digSigned(randomBytes(32));
    expect(seen.pop()).toEqual({ ok: false, error: "BADSIG" });
    signResponses = true;
  });

  test("dig rejects a response signed with the wrong chaining", async () => {
    const original = sock.listeners("message")[0] as (msg: Buffer, rinfo: { port: number; address: string }) => void;
    sock.removeAllListeners("message");
    sock.on("message", (msg, rinfo) => {
      const q = dnsPacket.decode(msg);
      const response = dnsPacket.encode({ id: q.id, type: "response", flags: 0, questions: q.questions, answers: [] });
      // No request MAC in the digest: a response that could be replayed for any request.
      sock.send(signMessage(response, key, { now: new Date() }).message, rinfo.port, rinfo.address);
    });
    try {
      expect(await digSigned(key.secret)).toMatch(/tsig verify failure|Couldn't verify|BADSIG|expected a TSIG or SIG/i);
    } finally {
      sock.removeAllListeners("message");
      sock.on("message", original);
    }
  });
});
