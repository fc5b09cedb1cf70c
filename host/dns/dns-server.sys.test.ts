/**
 * cvmd's embedded DNS server against the real `dig` (Debian dnsutils) on 127.0.0.1, UDP and TCP,
 * with an in-memory record source standing in for the store (test/dns/ runs it over the daemon's).
 */
import { createSocket } from "node:dgram";
import { connect, type Socket } from "node:net";
import dnsPacket from "dns-packet";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { DIG, dig } from "../../test/dns/dig.js";
import { AuthoritativeZone } from "./authoritative-zone.js";
import { startDnsServer, type DnsServer } from "./dns-server.js";
import type { DnsAddresses, DnsRecordSource } from "./records.js";
import { prerequisites } from "../../test/support/prerequisites.js";

const skipReason = prerequisites("the embedded DNS server tests", { tools: [DIG] });

/** TEST DOUBLE of the store: "<name>.<slug>" → addresses. */
class FakeRecordSource implements DnsRecordSource {
  readonly records = new Map<string, DnsAddresses>();
  async lookup(name: string, slug: string) {
    return this.records.get(`${name}.${slug}`) ?? null;
  }
}

const ZONE = "cvm.test";

function udpExchange(port: number, msg: Buffer, waitMs = 500): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = createSocket("udp4");
    const t = setTimeout(() => {
      s.close();
      resolve(null);
    }, waitMs);
    s.on("message", (m) => {
      clearTimeout(t);
      s.close();
      resolve(m);
    });
    s.send(msg, port, "127.0.0.1");
  });
}

function frame(msg: Buffer): Buffer {
  const b = Buffer.alloc(2 + msg.length);
  b.writeUInt16BE(msg.length);
  msg.copy(b, 2);
  return b;
}

/** Reads `count` length-prefixed responses, or whatever came before the server closed. */
function readFrames(sock: Socket, count: number, waitMs = 2_000): Promise<{ frames: Buffer[]; closed: boolean }> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const frames: Buffer[] = [];
    const done = (closed: boolean) => {
      clearTimeout(t);
      sock.removeAllListeners("data");
      resolve({ frames, closed });
    };
    const t = setTimeout(() => done(false), waitMs);
    sock.on("data", (c) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        frames.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (frames.length >= count) done(false);
    });
    sock.once("close", () => done(true));
  });
}

describe.skipIf(skipReason !== null)("embedded DNS server (dig over UDP and TCP)", () => {
  const source = new FakeRecordSource();
  let server: DnsServer;
  let at: { host: string; port: number };

  beforeAll(async () => {
    const zone = new AuthoritativeZone(
      { zone: ZONE, nameservers: [ZONE], apexAddresses: { a: ["127.0.0.1"] }, hostmaster: `hostmaster.${ZONE}`, ttlSeconds: 30, negativeTtlSeconds: 10, serial: 1_700_000_000 },
      source,
    );
    server = await startDnsServer({ listen: { host: "127.0.0.1", port: 0 }, zone, maxTcpConnections: 4, tcpIdleMs: 1_500 });
    at = { host: "127.0.0.1", port: server.port };
  });
  afterAll(async () => server?.close());

  test("a record exists while the instance lives and is NXDOMAIN after it is deleted", async () => {
    const name = `abcdefgh.acme.${ZONE}`;
    expect((await dig(at, name)).status).toBe("NXDOMAIN");
    source.records.set("abcdefgh.acme", { a: ["127.0.0.1"] });
    for (const extra of [[], ["+tcp"]]) {
      const r = await dig(at, name, "A", extra);
      expect(r.status, r.raw).toBe("NOERROR");
      expect(r.flags).toContain("aa");
      expect(r.answers).toEqual([{ name: `${name}.`, ttl: 30, type: "A", data: "127.0.0.1" }]);
    }
    // Case-insensitive (and the name comes back as asked).
    expect((await dig(at, `ABCDEFGH.Acme.CVM.test`)).answers).toEqual([{ name: "ABCDEFGH.Acme.CVM.test.", ttl: 30, type: "A", data: "127.0.0.1" }]);
    source.records.delete("abcdefgh.acme");
    for (const extra of [[], ["+tcp"]]) {
      const gone = await dig(at, name, "A", extra);
      expect(gone.status).toBe("NXDOMAIN");
      expect(gone.flags).toContain("aa");
      expect(gone.authority).toEqual([{ name: `${ZONE}.`, ttl: 10, type: "SOA", data: `${ZONE}. hostmaster.${ZONE}. 1700000000 3600 600 86400 10` }]);
    }
  });

  test("another tenant's slug does not reach this tenant's instance; outside the zone is REFUSED", async () => {
    source.records.set("ijklmnop.acme", { a: ["127.0.0.1"], aaaa: ["::1"] });
    expect((await dig(at, `ijklmnop.acme.${ZONE}`, "AAAA")).answers).toMatchObject([{ type: "AAAA", data: "::1" }]);
    expect((await dig(at, `ijklmnop.globex.${ZONE}`)).status).toBe("NXDOMAIN");
    expect((await dig(at, `x.ijklmnop.acme.${ZONE}`)).status).toBe("NXDOMAIN");
    for (const name of ["example.com", `ijklmnop.acme.${ZONE}.example`, "localhost"]) {
      const r = await dig(at, name);
      expect(r.status, name).toBe("REFUSED");
      expect(r.flags).not.toContain("aa");
    }
  });

  test("apex SOA and NS (with glue); tenant label NODATA; AXFR refused", async () => {
    expect((await dig(at, ZONE, "SOA")).answers).toMatchObject([{ type: "SOA", data: `${ZONE}. hostmaster.${ZONE}. 1700000000 3600 600 86400 10` }]);
    const ns = await dig(at, ZONE, "NS");
    expect(ns.answers).toEqual([{ name: `${ZONE}.`, ttl: 30, type: "NS", data: `${ZONE}.` }]);
    expect(ns.additional).toEqual([{ name: `${ZONE}.`, ttl: 30, type: "A", data: "127.0.0.1" }]);
    const tenant = await dig(at, `acme.${ZONE}`, "A");
    expect(tenant.status).toBe("NOERROR");
    expect(tenant.answers).toEqual([]);
    expect(tenant.authority).toMatchObject([{ type: "SOA" }]);
    const axfr = await dig(at, ZONE, "AXFR").catch((e: Error) => e);
    expect(String(axfr instanceof Error ? axfr.message : axfr.raw)).toMatch(/Transfer failed|REFUSED/);
  });

  test("EDNS: a version we do not speak is BADVERS", async () => {
    expect((await dig(at, `ijklmnop.acme.${ZONE}`, "A", ["+edns=1", "+noednsnegotiation"])).status).toBe("BADVERS");
    expect((await dig(at, `ijklmnop.acme.${ZONE}`, "A", ["+noedns"])).status).toBe("NOERROR");
  });

  test("an answer too big for 512 bytes of UDP is truncated; dig then gets it whole over TCP", async () => {
    const slug = "s".repeat(60);
    source.records.set(`bigbigbi.${slug}`, { a: Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 1}`), aaaa: Array.from({ length: 8 }, (_, i) => `fd00::${i + 1}`) });
    const name = `bigbigbi.${slug}.${ZONE}`;
    // (dig asks ANY over TCP by itself, so this uses A: 8 of them with this long name exceed 512 bytes.)
    const truncated = await dig(at, name, "A", ["+noedns", "+ignore"]);
    expect(truncated.flags).toContain("tc");
    expect(truncated.answers).toEqual([]);
    const retried = await dig(at, name, "A", ["+noedns"]);
    expect(retried.flags).not.toContain("tc");
    expect(retried.answers).toHaveLength(8);
    expect(retried.raw).toMatch(/\(TCP\)/);
    expect((await dig(at, name, "ANY")).answers).toHaveLength(16);
  });

  test("malformed UDP gets FORMERR or nothing, responses are ignored, and the server keeps answering", async () => {
    const formerr = await udpExchange(server.port, Buffer.from([0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
    expect(formerr && dnsPacket.decode(formerr)).toMatchObject({ id: 7, rcode: "FORMERR" });
    expect(await udpExchange(server.port, Buffer.from([1, 2, 3]))).toBeNull();
    const response = dnsPacket.encode({ type: "response", id: 9, questions: [{ name: `ijklmnop.acme.${ZONE}`, type: "A" }] });
    expect(await udpExchange(server.port, response)).toBeNull();
    expect((await dig(at, `ijklmnop.acme.${ZONE}`)).status).toBe("NOERROR");
  });

  test("TCP: pipelined queries answered in order; an idle client is dropped; connections are capped", async () => {
    const sock = connect(server.port, "127.0.0.1");
    await new Promise((r) => sock.once("connect", r));
    const q = (id: number, name: string) => frame(dnsPacket.encode({ type: "query", id, questions: [{ name, type: "A" }] }));
    sock.write(Buffer.concat([q(1, `ijklmnop.acme.${ZONE}`), q(2, "example.com"), q(3, `nope0000.acme.${ZONE}`)]));
    const { frames } = await readFrames(sock, 3);
    expect(frames.map((f) => dnsPacket.decode(f)).map((p) => [p.id, (p as { rcode?: string }).rcode])).toEqual([
      [1, "NOERROR"],
      [2, "REFUSED"],
      [3, "NXDOMAIN"],
    ]);
    const idle = await readFrames(sock, 1, 4_000);
    expect(idle.closed).toBe(true);

    const socks: Socket[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const s = connect(server.port, "127.0.0.1");
        s.on("error", () => undefined);
        socks.push(s);
        await new Promise((r) => s.once("connect", r));
      }
      // The fifth is over the cap of 4: the server closes it at once, the others stay usable.
      const fifth = await readFrames(socks[4]!, 1, 1_000);
      expect(fifth.closed).toBe(true);
      socks[0]!.write(q(5, `ijklmnop.acme.${ZONE}`));
      expect((await readFrames(socks[0]!, 1)).frames).toHaveLength(1);
    } finally {
      for (const s of socks) s.destroy();
    }
  });
});
