import { describe, expect, test } from "vitest";
import { fingerprintOf } from "../../shared/ssh/public-key.js";
import { eventDigest } from "../../shared/tdx/event-log.js";
import { authorizedKeyFingerprints, compareSshKeys, injectedFingerprints } from "./ssh-keys.js";

const blobA = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
const blobB = "AAAAC3NzaC1lZDI1NTE5AAAAIBKdcgQ5Q0hJ7aVr2zG2hGmB3nRk0x7vGqF2m0sQvWlS";
const fpA = fingerprintOf(Buffer.from(blobA, "base64"));
const fpB = fingerprintOf(Buffer.from(blobB, "base64"));

describe("host-injected SSH keys", () => {
  test("fingerprints from events (JSON or bare) and from authorized_keys (with options)", () => {
    const ev = (t: string, e: string) => ({ imr: 3, event_type: t, event: e, digest: eventDigest(t, e).toString("hex") });
    const events = [ev("ssh-authorized-key", JSON.stringify({ fingerprint: fpA })), ev("openclaw-tree", "{}"), ev("ssh-authorized-key", "garbage")];
    expect(injectedFingerprints(events)).toEqual([fpA]);
    const ak = `# comment\nssh-ed25519 ${blobA} tenant\nno-pty,command="echo hi" ssh-ed25519 ${blobB}\n\n`;
    expect(authorizedKeyFingerprints(ak)).toEqual([fpA, fpB]);
    expect(compareSshKeys([fpA], [fpB])).toEqual({ injected: [{ fingerprint: fpA, present_now: false }], not_injected: [fpB] });
    expect(compareSshKeys([fpA], [fpA, fpB]).injected[0]!.present_now).toBe(true);
  });
});
