import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

export type UpstreamFailure = "unreachable" | "timeout" | "aborted";

/** The upstream could not be reached, did not answer in time, or the request was abandoned. */
export class UpstreamError extends Error {
  override name = "UpstreamError";
  constructor(
    readonly kind: UpstreamFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface UpstreamRequest {
  method: "GET" | "POST";
  url: URL;
  headers: Record<string, string>;
  body: Buffer | null;
  signal: AbortSignal;
  /** Until the response head arrives. */
  headersTimeoutMs: number;
}

export interface UpstreamResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
}

/** How the gateway talks to an OpenAI-compatible server. */
export interface UpstreamClient {
  request(r: UpstreamRequest): Promise<UpstreamResponse>;
  close(): void;
}

/**
 * node:http(s) with keep-alive pools per origin: the gateway's cost per request is mostly the
 * upstream round trip, so reusing connections is what keeps the added latency small.
 */
export class HttpUpstreamClient implements UpstreamClient {
  private readonly http: HttpAgent;
  private readonly https: HttpsAgent;

  constructor(opts: { maxSocketsPerOrigin?: number } = {}) {
    const o = { keepAlive: true, maxSockets: opts.maxSocketsPerOrigin ?? 256, scheduling: "lifo" as const };
    this.http = new HttpAgent(o);
    this.https = new HttpsAgent(o);
  }

  request(r: UpstreamRequest): Promise<UpstreamResponse> {
    return new Promise((resolve, reject) => {
      if (r.signal.aborted) return reject(new UpstreamError("aborted", "request abandoned before it was sent"));
      const secure = r.url.protocol === "https:";
      const headers: Record<string, string | number> = { ...r.headers };
      if (r.body) headers["content-length"] = r.body.length;
      const req = (secure ? httpsRequest : httpRequest)(r.url, { method: r.method, headers, agent: secure ? this.https : this.http });
      let settled = false;
      const fail = (e: UpstreamError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        r.signal.removeEventListener("abort", onAbort);
        req.destroy(e);
        reject(e);
      };
      const timer = setTimeout(() => fail(new UpstreamError("timeout", `no response within ${r.headersTimeoutMs} ms`)), r.headersTimeoutMs);
      const onAbort = () => fail(new UpstreamError("aborted", "request abandoned"));
      r.signal.addEventListener("abort", onAbort, { once: true });
      req.on("error", (err: NodeJS.ErrnoException) => fail(new UpstreamError("unreachable", err.code ?? err.message)));
      req.on("response", (res) => {
        if (settled) {
          res.destroy();
          return;
        }
        settled = true;
        clearTimeout(timer);
        // From here the caller owns the body (and its own abort handling).
        r.signal.removeEventListener("abort", onAbort);
        resolve({ status: res.statusCode ?? 502, headers: res.headers, body: res });
      });
      req.end(r.body ?? undefined);
    });
  }

  close(): void {
    this.http.destroy();
    this.https.destroy();
  }
}
