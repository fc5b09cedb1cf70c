import pino, { type Logger } from "pino";

/** Paths that must never reach a log line, whatever a caller passes in. */
const REDACT = [
  "req.headers.authorization",
  "headers.authorization",
  "authorization",
  "api_key",
  "apiKey",
  "key",
  "secret",
  "private_key",
  "privateKey",
  "*.api_key",
  "*.apiKey",
  "*.secret",
  "*.private_key",
];

export function createLogger(level: string, name: string, destination?: pino.DestinationStream): Logger {
  return pino({ name, level, redact: { paths: REDACT, censor: "[redacted]" }, base: { pid: process.pid } }, destination);
}
