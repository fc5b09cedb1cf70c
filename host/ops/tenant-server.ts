import { readFile } from "node:fs/promises";
import { createServer as createHttpServer, type RequestListener, type Server } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { createSecureContext } from "node:tls";

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export interface TenantServer {
  server: Server | HttpsServer;
  scheme: "http" | "https";
  /** Re-reads the certificate and key; on any error the old pair stays in use and this rejects. */
  reloadTls(): Promise<void>;
}

async function readPair(tls: TlsFiles): Promise<{ cert: Buffer; key: Buffer }> {
  const [cert, key] = await Promise.all([
    readFile(tls.certFile).catch((err: Error) => Promise.reject(new Error(`CVM_TLS_CERT=${tls.certFile}: ${err.message}`))),
    readFile(tls.keyFile).catch((err: Error) => Promise.reject(new Error(`CVM_TLS_KEY=${tls.keyFile}: ${err.message}`))),
  ]);
  try {
    // Building a context checks that the files parse and that the key matches the certificate.
    createSecureContext({ cert, key });
  } catch (err) {
    throw new Error(`CVM_TLS_CERT/CVM_TLS_KEY: ${(err as Error).message}`);
  }
  return { cert, key };
}

/** The tenant listener: plain HTTP, or HTTPS when the operator gave a certificate and key. */
export async function createTenantServer(tls: TlsFiles | null, handler: RequestListener): Promise<TenantServer> {
  if (!tls) return { server: createHttpServer(handler), scheme: "http", reloadTls: async () => undefined };
  const server = createHttpsServer({ ...(await readPair(tls)), minVersion: "TLSv1.2" }, handler);
  return {
    server,
    scheme: "https",
    reloadTls: async () => server.setSecureContext({ ...(await readPair(tls)), minVersion: "TLSv1.2" }),
  };
}
