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

/** A certificate and key that parsed and match each other; read before start-up touches anything. */
export interface TlsPair {
  files: TlsFiles;
  cert: Buffer;
  key: Buffer;
}

/** Reads and checks the pair; its errors name CVM_TLS_CERT / CVM_TLS_KEY. */
export async function readTlsPair(files: TlsFiles): Promise<TlsPair> {
  const [cert, key] = await Promise.all([
    readFile(files.certFile).catch((err: Error) => Promise.reject(new Error(`CVM_TLS_CERT=${files.certFile}: ${err.message}`))),
    readFile(files.keyFile).catch((err: Error) => Promise.reject(new Error(`CVM_TLS_KEY=${files.keyFile}: ${err.message}`))),
  ]);
  try {
    // Building a context checks that the files parse and that the key matches the certificate.
    createSecureContext({ cert, key });
  } catch (err) {
    throw new Error(`CVM_TLS_CERT/CVM_TLS_KEY: ${(err as Error).message}`);
  }
  return { files, cert, key };
}

/** The tenant listener, not yet listening: plain HTTP, or HTTPS when the operator gave a certificate and key. */
export function createTenantServer(tls: TlsPair | null, handler: RequestListener): TenantServer {
  if (!tls) return { server: createHttpServer(handler), scheme: "http", reloadTls: async () => undefined };
  const server = createHttpsServer({ cert: tls.cert, key: tls.key, minVersion: "TLSv1.2" }, handler);
  return {
    server,
    scheme: "https",
    reloadTls: async () => {
      const { cert, key } = await readTlsPair(tls.files);
      server.setSecureContext({ cert, key, minVersion: "TLSv1.2" });
    },
  };
}
