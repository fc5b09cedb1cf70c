import dnsPacket, { type Answer, type DecodedPacket, type OptAnswer } from "dns-packet";
import type { Logger } from "pino";
import type { DnsAddresses, DnsRecordSource } from "./records.js";
import { normalizeAddresses } from "./records.js";
import { CLASS, OPCODE, TYPE, readQuestion } from "./wire.js";
import { canonicalName, locateInZone, type ZonePosition } from "./zone-names.js";

export interface ZoneOptions {
  /** The base domain, e.g. cvm.example.com. */
  zone: string;
  /** NS targets. A name inside the zone may only be the apex itself (answered with `apexAddresses`). */
  nameservers: string[];
  /** A/AAAA of the apex: the glue when the apex is its own nameserver. */
  apexAddresses: DnsAddresses;
  /** SOA RNAME as a domain name, e.g. hostmaster.cvm.example.com. */
  hostmaster: string;
  ttlSeconds: number;
  /** SOA MINIMUM: how long resolvers may cache "no such name" (RFC 2308). */
  negativeTtlSeconds: number;
  serial: number;
  /** Source lookups in flight at once; beyond it a query gets SERVFAIL instead of queueing. */
  maxInflightLookups?: number;
  lookupTimeoutMs?: number;
  logger?: Logger;
}

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
const BADVERS = 16;
const FLAG_QR = 0x8000;
const FLAG_AA = 0x0400;
const FLAG_TC = 0x0200;
const FLAG_RD = 0x0100;
/** The EDNS buffer size we offer and honour at most (the DNS Flag Day 2020 figure). */
const EDNS_UDP_SIZE = 1232;

interface Reply {
  rcode: number;
  aa: boolean;
  answers?: Answer[];
  authorities?: Answer[];
  additionals?: Answer[];
}

/**
 * Answers queries for one zone from a DnsRecordSource: pure message in, message out, so the
 * transports (UDP, TCP) stay thin and this is testable without sockets. Each query does a bounded
 * amount of work: one question, at most one source lookup, answers capped in size.
 */
export class AuthoritativeZone {
  private readonly zone: string;
  private inflight = 0;
  private readonly maxInflight: number;
  private readonly lookupTimeoutMs: number;

  constructor(
    private readonly o: ZoneOptions,
    private readonly source: DnsRecordSource,
  ) {
    this.zone = canonicalName(o.zone);
    for (const ns of o.nameservers) {
      const pos = locateInZone(ns, this.zone);
      if (pos.kind !== "outside" && pos.kind !== "apex") throw new Error(`nameserver ${ns}: inside ${this.zone} only the apex itself can be a nameserver`);
    }
    if (o.nameservers.length === 0) throw new Error("at least one nameserver is needed");
    normalizeAddresses(o.apexAddresses);
    this.maxInflight = o.maxInflightLookups ?? 64;
    this.lookupTimeoutMs = o.lookupTimeoutMs ?? 2_000;
  }

  /**
   * The response to `query`, or null when it deserves none (a response, or too short to carry an ID).
   * `maxSize` is the transport's limit: 65535 on TCP; on UDP the response shrinks to 512 bytes, or to
   * the client's EDNS size, with TC set when the answer does not fit.
   */
  async respond(query: Buffer, transport: "udp" | "tcp"): Promise<Buffer | null> {
    if (query.length < 12) return null;
    const flags = query.readUInt16BE(2);
    if (flags & FLAG_QR) return null; // never answer answers: no reflection loops
    const opcode = (flags >> 11) & 0xf;
    const header = { id: query.readUInt16BE(0), opcodeBits: flags & 0x7800, rd: flags & FLAG_RD };

    let decoded: DecodedPacket;
    try {
      decoded = dnsPacket.decode(query);
    } catch {
      return this.encode(header, null, null, { rcode: RCODE.FORMERR, aa: false }, transport, 512);
    }
    const question = query.readUInt16BE(4) === 1 ? readQuestion(query) : null;
    const raw = question ? query.subarray(12, question.end) : null;
    const opts = (decoded.additionals ?? []).filter((a): a is OptAnswer => a.type === "OPT");
    const edns = opts[0] ?? null;
    const limit = transport === "tcp" ? 65535 : edns ? Math.min(Math.max(edns.udpPayloadSize, 512), EDNS_UDP_SIZE) : 512;
    const send = (reply: Reply, ednsReply = edns) => this.encode(header, raw, ednsReply, reply, transport, limit);

    if (opcode !== OPCODE.QUERY) return send({ rcode: RCODE.NOTIMP, aa: false });
    if (!question || opts.length > 1) return send({ rcode: RCODE.FORMERR, aa: false });
    if (edns && edns.ednsVersion !== 0) return send({ rcode: BADVERS, aa: false });
    if (question.klass !== CLASS.IN && question.klass !== CLASS.ANY) return send({ rcode: RCODE.REFUSED, aa: false });

    let pos = locateInZone(question.name, this.zone);
    // A label holding a dot or a non-ASCII byte could pass for another name once turned into a string.
    if (!question.plainLabels && pos.kind !== "outside") pos = { kind: "nonexistent" };
    if (pos.kind === "outside") return send({ rcode: RCODE.REFUSED, aa: false });
    if (question.type === TYPE.AXFR || question.type === TYPE.IXFR) return send({ rcode: RCODE.REFUSED, aa: false });
    return send(await this.answer(question.name, question.type, pos));
  }

  private async answer(qname: string, qtype: number, pos: Exclude<ZonePosition, { kind: "outside" }>): Promise<Reply> {
    const nodata: Reply = { rcode: RCODE.NOERROR, aa: true, authorities: [this.soa(true)] };
    const nxdomain: Reply = { rcode: RCODE.NXDOMAIN, aa: true, authorities: [this.soa(true)] };
    switch (pos.kind) {
      case "apex": {
        const answers: Answer[] = [];
        const any = qtype === TYPE.ANY;
        if (qtype === TYPE.SOA || any) answers.push({ ...this.soa(false), name: qname });
        if (qtype === TYPE.NS || any) answers.push(...this.o.nameservers.map((ns): Answer => ({ name: qname, type: "NS", ttl: this.o.ttlSeconds, data: ns })));
        answers.push(...this.addressAnswers(qname, qtype, this.o.apexAddresses));
        if (answers.length === 0) return nodata;
        const additionals = qtype === TYPE.NS && this.o.nameservers.some((ns) => canonicalName(ns) === this.zone) ? this.addressAnswers(this.zone, TYPE.ANY, this.o.apexAddresses) : [];
        return { rcode: RCODE.NOERROR, aa: true, answers, additionals };
      }
      // A tenant label only ever holds instance names below it. Answering NXDOMAIN here would let
      // resolvers that cut at NXDOMAIN (RFC 8020) hide the instances, so every tenant label "exists".
      case "tenant":
        return nodata;
      case "nonexistent":
        return nxdomain;
      case "instance": {
        const found = await this.lookup(pos.name, pos.slug);
        if (found === "busy") return { rcode: RCODE.SERVFAIL, aa: false };
        if (found === null) return nxdomain;
        const answers = this.addressAnswers(qname, qtype, found);
        return answers.length ? { rcode: RCODE.NOERROR, aa: true, answers } : nodata;
      }
    }
  }

  private addressAnswers(name: string, qtype: number, r: DnsAddresses): Answer[] {
    const { a, aaaa } = normalizeAddresses(r);
    const out: Answer[] = [];
    if (qtype === TYPE.A || qtype === TYPE.ANY) out.push(...a.map((ip): Answer => ({ name, type: "A", ttl: this.o.ttlSeconds, data: ip })));
    if (qtype === TYPE.AAAA || qtype === TYPE.ANY) out.push(...aaaa.map((ip): Answer => ({ name, type: "AAAA", ttl: this.o.ttlSeconds, data: ip })));
    return out;
  }

  /** In the authority section of a negative answer its TTL is the negative-caching time (RFC 2308 §3). */
  private soa(negative: boolean): Answer {
    return {
      name: this.zone,
      type: "SOA",
      ttl: negative ? Math.min(this.o.ttlSeconds, this.o.negativeTtlSeconds) : this.o.ttlSeconds,
      data: {
        mname: this.o.nameservers[0]!,
        rname: this.o.hostmaster,
        serial: this.o.serial >>> 0,
        refresh: 3600,
        retry: 600,
        expire: 86400,
        minimum: this.o.negativeTtlSeconds,
      },
    };
  }

  /** "busy" when too many lookups are already running or this one is too slow: SERVFAIL, and the resolver retries. */
  private async lookup(name: string, slug: string): Promise<DnsAddresses | null | "busy"> {
    if (this.inflight >= this.maxInflight) return "busy";
    this.inflight++;
    const work = this.source.lookup(name, slug).finally(() => this.inflight--);
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([work, new Promise<"busy">((r) => (timer = setTimeout(() => r("busy"), this.lookupTimeoutMs)))]);
    } catch (err) {
      this.o.logger?.error({ err, name, slug }, "DNS record lookup failed");
      return "busy";
    } finally {
      clearTimeout(timer);
      work.catch(() => undefined);
    }
  }

  private encode(
    h: { id: number; opcodeBits: number; rd: number },
    question: Buffer | null,
    edns: OptAnswer | null,
    reply: Reply,
    transport: "udp" | "tcp",
    limit: number,
  ): Buffer {
    const opt: Answer[] = edns
      ? [{ name: ".", type: "OPT", udpPayloadSize: EDNS_UDP_SIZE, extendedRcode: reply.rcode >> 4, ednsVersion: 0, flags: 0, flag_do: false, options: [] }]
      : [];
    const rcode = edns ? reply.rcode & 0xf : reply.rcode > 15 ? RCODE.FORMERR : reply.rcode;
    const flagsFor = (tc: boolean) => FLAG_QR | h.opcodeBits | (reply.aa ? FLAG_AA : 0) | (tc ? FLAG_TC : 0) | h.rd | rcode;
    // dns-packet re-encodes a question from strings; the raw bytes are spliced in instead, so
    // the client's exact name (0x20 case randomisation) and unknown types/classes come back intact.
    const build = (tc: boolean, full: boolean) => {
      const body = dnsPacket.encode({
        id: h.id,
        type: "response",
        flags: flagsFor(tc),
        questions: [],
        answers: full ? reply.answers ?? [] : [],
        authorities: full ? reply.authorities ?? [] : [],
        additionals: [...(full ? reply.additionals ?? [] : []), ...opt],
      });
      if (!question) return body;
      const out = Buffer.concat([body.subarray(0, 12), question, body.subarray(12)]);
      out.writeUInt16BE(1, 4);
      return out;
    };
    const full = build(false, true);
    if (full.length <= limit || transport === "tcp") return full;
    return build(true, false);
  }
}
