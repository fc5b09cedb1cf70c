/**
 * Which SSH keys did the host inject, and are they what authorized_keys holds now? The agent records
 * each key it installs as an RTMR3 event of type "ssh-authorized-key" whose payload is JSON with a
 * "fingerprint" (OpenSSH SHA256:... form); a bare fingerprint string is accepted too.
 */
import { fingerprintOf } from "../../shared/ssh/public-key.js";
import type { RtmrEvent } from "../../shared/tdx/event-log.js";

export const SSH_KEY_EVENT = "ssh-authorized-key";

export function injectedFingerprints(events: readonly RtmrEvent[]): string[] {
  const out: string[] = [];
  for (const e of events) {
    if (e.event_type !== SSH_KEY_EVENT) continue;
    let fp: unknown = e.event.trim();
    if (typeof fp === "string" && fp.startsWith("{")) {
      try {
        fp = (JSON.parse(fp) as { fingerprint?: unknown }).fingerprint;
      } catch {
        fp = undefined;
      }
    }
    if (typeof fp === "string" && /^SHA256:[A-Za-z0-9+/]{43}$/.test(fp)) out.push(fp);
  }
  return out;
}

/** Fingerprints of the keys in an authorized_keys file (options before the key type are skipped). */
export function authorizedKeyFingerprints(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const tokens = line.split(/\s+/);
    const i = tokens.findIndex((t) => /^(ssh-|ecdsa-sha2-|sk-)/.test(t));
    const b64 = i >= 0 ? tokens[i + 1] : undefined;
    if (!b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) continue;
    out.push(fingerprintOf(Buffer.from(b64, "base64")));
  }
  return out;
}

export interface SshKeyReport {
  injected: { fingerprint: string; present_now: boolean }[];
  /** Keys in authorized_keys that no event accounts for (added inside the guest, e.g. by the tenant). */
  not_injected: string[];
}

export function compareSshKeys(injected: string[], current: string[]): SshKeyReport {
  return {
    injected: injected.map((fingerprint) => ({ fingerprint, present_now: current.includes(fingerprint) })),
    not_injected: current.filter((fp) => !injected.includes(fp)),
  };
}
