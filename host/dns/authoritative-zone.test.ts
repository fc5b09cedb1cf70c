import dnsPacket, { type OptAnswer, type Packet } from "dns-packet";
import { describe, expect, test } from "vitest";
import { AuthoritativeZone, type ZoneOptions } from "./authoritative-zone.js";
import type { DnsAddresses, DnsRecordSource } from "./records.js";

/** TEST DOUBLE of the store: instances keyed by "<name>.<slug>". */
class FakeRecordSource implements DnsRecordSource {
  readonly records = new Map<string, DnsAddresses>();
  lookups = 0;
  async lookup(name: string, slug: string) {
    this.lookups++;
    return this.records.get(`${name}.${slug}`) ?? null;
  }
}

const OPTS: ZoneOptions = {
  zone: "cvm.test",
  nameservers: ["cvm.test", "ns.operator.example"],
  apexAddresses: { a: ["127.0.0.1"] },
  hostmaster: "hostmaster.cvm.test",
  ttlSeconds: 30,
  negativeTtlSeconds: 10,
  serial: 1_700_000_000,
};

function query(name: string, type: string, extra: Partial<Packet> = {}): Buffer {
  return dnsPacket.encode({ type: "query", id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: type as "A" }], ...extra });
}

async function ask(zone: AuthoritativeZone, q: Buffer, transport: "udp" | "tcp" = "udp") {
  const res = await zone.respond(q, transport);
  expect(res).not.toBeNull();
  return { raw: res!, ...dnsPacket.decode(res!) } as dnsPacket.DecodedPacket & { raw: Buffer; rcode: string };
}

describe("AuthoritativeZone", () => {
  const source = new FakeRecordSource();
  source.records.set("abcdefgh.acme", { a: ["127.0.0.1"] });
  source.records.set("v6v6v6v6.acme", { aaaa: ["fd00::5"] });
  source.records.set("pending0.acme", {});
  const zone = new AuthoritativeZone(OPTS, source);

  test("an instance name answers its address, authoritatively, echoing the question as asked", async () => {
    const r = await ask(zone, query("AbCdEfGh.ACME.Cvm.Test", "A"));
    expect(r.rcode).toBe("NOERROR");
    expect(r.flag_aa).toBe(true);
    expect(r.flag_rd).toBe(true);
    expect(r.id).toBe(4242);
    expect(r.questions).toEqual([{ name: "AbCdEfGh.ACME.Cvm.Test", type: "A", class: "IN" }]);
    expect(r.answers).toMatchObject([{ name: "AbCdEfGh.ACME.Cvm.Test", type: "A", ttl: 30, data: "127.0.0.1" }]);
  });

  test("AAAA, ANY, and NODATA for a type the name lacks", async () => {
    expect((await ask(zone, query("v6v6v6v6.acme.cvm.test", "AAAA"))).answers).toMatchObject([{ type: "AAAA", data: "fd00::5" }]);
    const nodata = await ask(zone, query("v6v6v6v6.acme.cvm.test", "A"));
    expect(nodata.rcode).toBe("NOERROR");
    expect(nodata.answers).toEqual([]);
    expect(nodata.authorities).toMatchObject([{ type: "SOA", name: "cvm.test", ttl: 10 }]);
    expect((await ask(zone, query("abcdefgh.acme.cvm.test", "MX"))).answers).toEqual([]);
    expect((await ask(zone, query("abcdefgh.acme.cvm.test", "ANY"))).answers).toMatchObject([{ type: "A" }]);
    // An instance without an address yet exists: NODATA, not NXDOMAIN.
    expect((await ask(zone, query("pending0.acme.cvm.test", "A"))).rcode).toBe("NOERROR");
  });

  test("unknown names in the zone are NXDOMAIN with the SOA for negative caching", async () => {
    for (const name of ["abcdefgh.other.cvm.test", "zzzzzzzz.acme.cvm.test", "x.abcdefgh.acme.cvm.test", "a_b.acme.cvm.test"]) {
      const r = await ask(zone, query(name, "A"));
      expect(r.rcode, name).toBe("NXDOMAIN");
      expect(r.flag_aa).toBe(true);
      expect(r.authorities).toMatchObject([{ type: "SOA", name: "cvm.test", ttl: 10, data: { minimum: 10, mname: "cvm.test", rname: "hostmaster.cvm.test" } }]);
    }
  });

  test("names outside the zone are REFUSED without the AA bit, and never reach the source", async () => {
    const before = source.lookups;
    for (const name of ["example.com", "abcdefgh.acme.cvm.test.evil", "xcvm.test", "."]) {
      const r = await ask(zone, query(name, "A"));
      expect(r.rcode, name).toBe("REFUSED");
      expect(r.flag_aa).toBe(false);
    }
    expect(source.lookups).toBe(before);
  });

  test("apex: SOA, NS with glue for the in-zone nameserver, A; tenant labels are NODATA", async () => {
    const soa = await ask(zone, query("cvm.test", "SOA"));
    expect(soa.answers).toMatchObject([{ type: "SOA", data: { serial: 1_700_000_000, mname: "cvm.test" } }]);
    const ns = await ask(zone, query("cvm.test", "NS"));
    expect(ns.answers!.map((a) => (a as { data: string }).data)).toEqual(["cvm.test", "ns.operator.example"]);
    expect(ns.additionals!.filter((a) => a.type === "A")).toMatchObject([{ name: "cvm.test", data: "127.0.0.1" }]);
    expect((await ask(zone, query("cvm.test", "A"))).answers).toMatchObject([{ data: "127.0.0.1" }]);
    const tenant = await ask(zone, query("acme.cvm.test", "SOA"));
    expect(tenant.rcode).toBe("NOERROR");
    expect(tenant.answers).toEqual([]);
    expect(tenant.authorities).toMatchObject([{ type: "SOA" }]);
  });

  test("zone transfers and other classes are refused; other opcodes are NOTIMP", async () => {
    expect((await ask(zone, query("cvm.test", "AXFR"))).rcode).toBe("REFUSED");
    expect((await ask(zone, query("cvm.test", "SOA", { questions: [{ name: "cvm.test", type: "SOA", class: "CH" }] }))).rcode).toBe("REFUSED");
    const update = query("cvm.test", "SOA");
    update.writeUInt16BE((5 << 11) | 0x0100, 2);
    expect((await ask(zone, update)).rcode).toBe("NOTIMP");
  });

  test("malformed messages: FORMERR or silence, never a crash", async () => {
    expect(await zone.respond(Buffer.alloc(5), "udp")).toBeNull();
    // A response is never answered (no reflection loops between servers).
    const resp = query("abcdefgh.acme.cvm.test", "A");
    resp.writeUInt16BE(resp.readUInt16BE(2) | 0x8000, 2);
    expect(await zone.respond(resp, "udp")).toBeNull();
    // Header claims one question, none follows.
    const runt = Buffer.from([0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    const r1 = await ask(zone, runt);
    expect(r1.rcode).toBe("FORMERR");
    expect(r1.id).toBe(7);
    // Two questions.
    const two = dnsPacket.encode({ type: "query", id: 8, questions: [{ name: "a.cvm.test", type: "A" }, { name: "b.cvm.test", type: "A" }] });
    expect((await ask(zone, two)).rcode).toBe("FORMERR");
    // A compression pointer looping on itself.
    const loop = Buffer.concat([Buffer.from([0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    expect((await ask(zone, loop)).rcode).toBe("FORMERR");
    // Random garbage of every length up to 64 bytes: each gets an answer or silence within the call.
    for (let n = 0; n < 64; n++) {
      const junk = Buffer.alloc(n, 0xa5);
      const res = await zone.respond(junk, "udp");
      if (res) expect(res.length).toBeLessThanOrEqual(512);
    }
  });

  test("a label holding a dot on the wire cannot pass for two labels", async () => {
    // One label "abcdefgh.acme" under cvm.test: the string form would read like the real instance.
    const label = Buffer.from("abcdefgh.acme");
    const name = Buffer.concat([Buffer.from([label.length]), label, Buffer.from([3]), Buffer.from("cvm"), Buffer.from([4]), Buffer.from("test"), Buffer.from([0])]);
    const q = Buffer.concat([Buffer.from([0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), name, Buffer.from([0, 1, 0, 1])]);
    expect((await ask(zone, q)).rcode).toBe("NXDOMAIN");
  });

  test("EDNS: echoed with our buffer size; version 1 is BADVERS", async () => {
    const opt: OptAnswer = { name: ".", type: "OPT", udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] };
    const r = await ask(zone, query("abcdefgh.acme.cvm.test", "A", { additionals: [opt] }));
    expect(r.additionals).toMatchObject([{ type: "OPT", udpPayloadSize: 1232 }]);
    const bad = await ask(zone, query("abcdefgh.acme.cvm.test", "A", { additionals: [{ ...opt, ednsVersion: 1 }] }));
    expect(bad.additionals).toMatchObject([{ type: "OPT", extendedRcode: 1 }]); // 16 = BADVERS, upper bits
    expect(bad.raw.readUInt16BE(2) & 0xf).toBe(0);
  });

  test("UDP answers that do not fit in 512 bytes are truncated (TC) and complete over TCP", async () => {
    const slug = "s".repeat(63);
    const src = new FakeRecordSource();
    src.records.set(`abcdefgh.${slug}`, { a: Array.from({ length: 8 }, (_, i) => `10.0.0.${i + 1}`), aaaa: Array.from({ length: 8 }, (_, i) => `fd00::${i + 1}`) });
    const z = new AuthoritativeZone({ ...OPTS, zone: `${"z".repeat(60)}.cvm.test` }, src);
    const name = `abcdefgh.${slug}.${"z".repeat(60)}.cvm.test`;
    const udp = await ask(z, query(name, "ANY"));
    expect(udp.flag_tc).toBe(true);
    expect(udp.answers).toEqual([]);
    expect(udp.raw.length).toBeLessThanOrEqual(512);
    const tcp = await ask(z, query(name, "ANY"), "tcp");
    expect(tcp.flag_tc).toBe(false);
    expect(tcp.answers).toHaveLength(16);
  });

  test("bounded: a slow source yields SERVFAIL after the timeout, and excess lookups are refused at once", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started = 0;
    const slow: DnsRecordSource = {
      lookup: async () => {
        started++;
        await gate;
        return { a: ["127.0.0.1"] };
      },
    };
    const z = new AuthoritativeZone({ ...OPTS, maxInflightLookups: 2, lookupTimeoutMs: 200 }, slow);
    const t0 = Date.now();
    const replies = await Promise.all([1, 2, 3, 4].map(() => ask(z, query("abcdefgh.acme.cvm.test", "A"))));
    expect(replies.map((r) => r.rcode)).toEqual(["SERVFAIL", "SERVFAIL", "SERVFAIL", "SERVFAIL"]);
    expect(started).toBe(2);
    expect(Date.now() - t0).toBeLessThan(2_000);
    // While the two stuck lookups hold their slots, new ones are still refused; released, they free up.
    expect((await ask(z, query("abcdefgh.acme.cvm.test", "A"))).rcode).toBe("SERVFAIL");
    expect(started).toBe(2);
    release();
    await new Promise((r) => setTimeout(r, 10));
    expect((await ask(z, query("abcdefgh.acme.cvm.test", "A"))).rcode).toBe("NOERROR");
  });

  test("a failing source is SERVFAIL, not a crash", async () => {
    const z = new AuthoritativeZone(OPTS, { lookup: async () => Promise.reject(new Error("database is locked")) });
    expect((await ask(z, query("abcdefgh.acme.cvm.test", "A"))).rcode).toBe("SERVFAIL");
  });

  test("rejects a nameserver below the apex (that label belongs to tenants)", () => {
    expect(() => new AuthoritativeZone({ ...OPTS, nameservers: ["ns1.cvm.test"] }, source)).toThrow(/only the apex/);
  });
});
