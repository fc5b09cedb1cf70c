import { describe, expect, it } from "vitest";
import { DatabaseConnectionError } from "./postgres-connection.js";
import { storageTrouble } from "./storage-trouble.js";

const coded = (code: string) => Object.assign(new Error(code), { code });

describe("storage trouble: the same three kinds on SQLite, PostgreSQL and the filesystem", () => {
  it.each([
    ["SQLITE_FULL", 30],
    ["ENOSPC", 30],
    ["53100", 30], // disk_full
  ])("%s is a full disk", (code, retryAfterS) => {
    expect(storageTrouble(coded(code))).toEqual({ code, message: "the server's storage is full; retry later", retryAfterS });
  });

  it.each(["SQLITE_BUSY", "SQLITE_LOCKED", "40001", "40P01", "55P03", "53300"])("%s is busy", (code) => {
    expect(storageTrouble(coded(code))).toEqual({ code, message: "the database is busy; retry shortly", retryAfterS: 5 });
  });

  it.each(["SQLITE_IOERR", "SQLITE_READONLY", "EIO", "EROFS", "58030", "25006", "57P01", "57P03", "08006", "08001"])("%s is an I/O failure", (code) => {
    expect(storageTrouble(coded(code))).toEqual({ code, message: "the server's storage failed; retry later", retryAfterS: 30 });
  });

  it("a lost PostgreSQL connection, also as the cause of another error", () => {
    const lost = new DatabaseConnectionError("database connection failed: Connection terminated unexpectedly");
    expect(storageTrouble(lost)?.code).toBe("08006");
    expect(storageTrouble(new Error("record the event", { cause: lost }))?.code).toBe("08006");
  });

  it.each(["23505", "42601", "SQLITE_CONSTRAINT", "ECONNREFUSED", "ERR_INVALID_ARG_TYPE"])("%s is not storage trouble", (code) => {
    expect(storageTrouble(coded(code))).toBeNull();
  });
});
