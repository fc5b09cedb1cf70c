import { randomInt } from "node:crypto";
import { connect } from "node:net";
import { normalizeAddresses, type DnsAddresses, type DnsProvider } from "./records.js";
import { signMessage, verifyMessage, type TsigKey } from "./tsig.js";
import { CLASS, OPCODE, TYPE, encodeName, encodeRecord, ipv4Bytes, ipv6Bytes, rcodeName, u16 } from "./wire.js";
import { canonicalName } from "./zone-names.js";

export interface Rfc2136Config {
  /** The zone's primary (or whatever accepts updates for it). */
  server: { host: string; port: number };
  zone: string;
  key: TsigKey;
  ttlSeconds: number;
  timeoutMs?: number;
  /** Seconds of clock skew the server may show before it is BADTIME. */
  fudgeSeconds?: number;
}

/** The server said no, or its answer could not be trusted. */
export class DnsUpdateError extends Error {
  override name = "DnsUpdateError";
  constructor(
    message: string,
    /** The response's RCODE (NOTAUTH, REFUSED, ...), or null when there was no usable response. */
    readonly rcode: string | null,
    /** The TSIG error the server reported or that verifying its answer found (BADSIG, BADKEY, BADTIME...). */
    readonly tsigError: string | null,
  ) {
    super(message);
  }
}

/**
 * Publishes instance hostnames into an operator's existing DNS with TSIG-signed dynamic updates
 * (RFC 2136, RFC 8945 HMAC-SHA256) over TCP. Each call is one atomic update that replaces the
 * name's A and AAAA sets (or deletes them), so it is idempotent and safe to repeat after a crash.
 */
export class Rfc2136Provider implements DnsProvider {
  readonly name = "rfc2136";
  private readonly zone: string;

  constructor(
    private readonly cfg: Rfc2136Config,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.zone = canonicalName(cfg.zone);
  }

  async upsert(hostname: string, records: DnsAddresses): Promise<void> {
    const name = this.inZone(hostname);
    const { a, aaaa } = normalizeAddresses(records);
    await this.send([
      deleteRrset(name, TYPE.A),
      deleteRrset(name, TYPE.AAAA),
      ...a.map((ip) => encodeRecord(name, TYPE.A, CLASS.IN, this.cfg.ttlSeconds, ipv4Bytes(ip))),
      ...aaaa.map((ip) => encodeRecord(name, TYPE.AAAA, CLASS.IN, this.cfg.ttlSeconds, ipv6Bytes(ip))),
    ]);
  }

  /** Deletes only the address sets cvmd manages, so anything an operator added by hand survives. */
  async remove(hostname: string): Promise<void> {
    const name = this.inZone(hostname);
    await this.send([deleteRrset(name, TYPE.A), deleteRrset(name, TYPE.AAAA)]);
  }

  private inZone(hostname: string): string {
    const n = canonicalName(hostname);
    if (n === this.zone || !n.endsWith("." + this.zone)) throw new Error(`${hostname} is not a name inside zone ${this.zone}`);
    return n;
  }

  private async send(updates: Buffer[]): Promise<void> {
    const id = randomInt(0x10000);
    const header = Buffer.concat([u16(id), u16(OPCODE.UPDATE << 11), u16(1), u16(0), u16(updates.length), u16(0)]);
    const zoneSection = Buffer.concat([encodeName(this.zone), u16(TYPE.SOA), u16(CLASS.IN)]);
    const { message, mac } = signMessage(Buffer.concat([header, zoneSection, ...updates]), this.cfg.key, {
      now: this.now(),
      fudgeSeconds: this.cfg.fudgeSeconds,
    });
    const response = await exchangeTcp(this.cfg.server, message, this.cfg.timeoutMs ?? 5_000);
    if (response.length < 12 || response.readUInt16BE(0) !== id || !(response.readUInt16BE(2) & 0x8000)) {
      throw new DnsUpdateError(`DNS update to ${this.where()}: response does not match the request`, null, null);
    }
    const rcode = rcodeName(response.readUInt16BE(2) & 0xf);
    const verdict = verifyMessage(response, this.cfg.key, { requestMac: mac, now: this.now() });
    if (!verdict.ok) {
      throw new DnsUpdateError(`DNS update to ${this.where()} failed: ${rcode}, TSIG ${verdict.error}`, rcode, verdict.error);
    }
    if (rcode !== "NOERROR") throw new DnsUpdateError(`DNS update to ${this.where()} failed: ${rcode}`, rcode, null);
  }

  private where(): string {
    return `${this.cfg.server.host}:${this.cfg.server.port} (zone ${this.zone})`;
  }
}

/** RFC 2136 §2.5.2: class ANY, TTL 0, no RDATA deletes the whole RRset of that type. */
function deleteRrset(name: string, type: number): Buffer {
  return encodeRecord(name, type, CLASS.ANY, 0, Buffer.alloc(0));
}

/** One length-prefixed request and response over a fresh TCP connection. */
function exchangeTcp(server: { host: string; port: number }, message: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: server.host, port: server.port });
    let buf = Buffer.alloc(0);
    const fail = (err: Error) => {
      sock.destroy();
      reject(new DnsUpdateError(`DNS update to ${server.host}:${server.port}: ${err.message}`, null, null));
    };
    sock.setTimeout(timeoutMs, () => fail(new Error(`no response within ${timeoutMs} ms`)));
    sock.on("error", fail);
    sock.on("connect", () => sock.write(Buffer.concat([u16(message.length), message])));
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        sock.destroy();
        resolve(buf.subarray(2, 2 + len));
      }
    });
    sock.on("end", () => fail(new Error("connection closed before a full response")));
  });
}
