/**
 * Which TCB statuses pass: one rule for cvm-verify in the guest and the host's verdicts, so the two
 * can never disagree about the same quote. A DCAP-valid quote is acceptable only when its converged
 * status is in the accepted list; the default is UpToDate alone, and whoever widens it (an operator
 * with CVM_ACCEPT_TCB_STATUS, a tenant with --accept-tcb-status) does so by name. Revoked can never be
 * accepted: verification itself already fails such a quote.
 */
import { TCB_STATUSES, type TcbStatus } from "./tcb.js";

export const DEFAULT_ACCEPTED_TCB_STATUSES: readonly TcbStatus[] = Object.freeze(["UpToDate"]);

export class TcbPolicyError extends Error {
  override name = "TcbPolicyError";
}

/** "UpToDate,OutOfDate" → the statuses, in TCB_STATUSES order; `what` names the setting in errors. */
export function parseAcceptedTcbStatuses(text: string | undefined, what: string): TcbStatus[] {
  if (text === undefined) return [...DEFAULT_ACCEPTED_TCB_STATUSES];
  const names = text.split(",").map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new TcbPolicyError(`${what} is empty: list at least one TCB status (default UpToDate)`);
  for (const n of names) {
    if (n === "Revoked") throw new TcbPolicyError(`${what}: Revoked can never be accepted`);
    if (!(TCB_STATUSES as readonly string[]).includes(n)) {
      throw new TcbPolicyError(`${what}: unknown TCB status "${n}" (one of ${TCB_STATUSES.filter((s) => s !== "Revoked").join(", ")})`);
    }
  }
  return TCB_STATUSES.filter((s) => names.includes(s));
}

export interface TcbPolicyVerdict {
  /** The quote verified and its status is accepted. */
  ok: boolean;
  accepted_statuses: TcbStatus[];
  /** Set when the quote verified but its status is not accepted. */
  reason: string | null;
}

/** Applies the policy to a DCAP verdict ({ok, status}); a quote that did not verify stays not ok with its own reason. */
export function applyTcbPolicy(v: { ok: boolean; status: TcbStatus | null }, accepted: readonly TcbStatus[] = DEFAULT_ACCEPTED_TCB_STATUSES): TcbPolicyVerdict {
  const list = [...accepted];
  if (!v.ok || v.status === null) return { ok: false, accepted_statuses: list, reason: null };
  if (v.status !== "Revoked" && accepted.includes(v.status)) return { ok: true, accepted_statuses: list, reason: null };
  return { ok: false, accepted_statuses: list, reason: `TCB status ${v.status} is not accepted (accepted: ${list.join(", ")})` };
}
