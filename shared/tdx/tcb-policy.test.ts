import { describe, expect, test } from "vitest";
import { applyTcbPolicy, parseAcceptedTcbStatuses } from "./tcb-policy.js";
import { loadFixture } from "./test/fixtures.js";
import { verifyQuoteSync } from "./verify.js";

describe("TCB policy (shared by cvm-verify and the host)", () => {
  const gcp = loadFixture("gcp-cos-v4-outofdate");
  const outOfDate = verifyQuoteSync(gcp.quote, gcp.collateral!, { at: gcp.expected.at_unix! });
  const tdx = loadFixture("tdx-v4-uptodate");
  const upToDate = verifyQuoteSync(tdx.quote, tdx.collateral!, { at: tdx.expected.at_unix! });

  test("default: UpToDate only; a DCAP-valid OutOfDate quote is not accepted and says what was", () => {
    expect(outOfDate).toMatchObject({ ok: true, status: "OutOfDate" });
    expect(applyTcbPolicy(outOfDate)).toEqual({ ok: false, accepted_statuses: ["UpToDate"], reason: "TCB status OutOfDate is not accepted (accepted: UpToDate)" });
    expect(applyTcbPolicy(upToDate)).toEqual({ ok: true, accepted_statuses: ["UpToDate"], reason: null });
  });

  test("widened by name", () => {
    const accepted = parseAcceptedTcbStatuses("OutOfDate, UpToDate", "CVM_ACCEPT_TCB_STATUS");
    expect(accepted).toEqual(["UpToDate", "OutOfDate"]);
    expect(applyTcbPolicy(outOfDate, accepted)).toMatchObject({ ok: true, accepted_statuses: ["UpToDate", "OutOfDate"] });
    // widening to OutOfDate alone drops UpToDate: the list is what passes, nothing implied
    expect(applyTcbPolicy(upToDate, parseAcceptedTcbStatuses("OutOfDate", "x")).ok).toBe(false);
  });

  test("a quote that does not verify is never made ok by the policy", () => {
    expect(applyTcbPolicy({ ok: false, status: null }, ["UpToDate", "OutOfDate"])).toMatchObject({ ok: false, reason: null });
    expect(applyTcbPolicy({ ok: false, status: "Revoked" }, ["UpToDate"]).ok).toBe(false);
  });

  test("bad lists are refused naming the setting; Revoked cannot be accepted", () => {
    expect(parseAcceptedTcbStatuses(undefined, "x")).toEqual(["UpToDate"]);
    expect(() => parseAcceptedTcbStatuses(" , ", "CVM_ACCEPT_TCB_STATUS")).toThrow(/^CVM_ACCEPT_TCB_STATUS is empty/);
    expect(() => parseAcceptedTcbStatuses("UpToDate,Fine", "--accept-tcb-status")).toThrow(/--accept-tcb-status: unknown TCB status "Fine"/);
    expect(() => parseAcceptedTcbStatuses("Revoked", "CVM_ACCEPT_TCB_STATUS")).toThrow(/Revoked can never be accepted/);
  });
});
