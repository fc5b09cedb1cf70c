import { afterAll, describe, expect, it } from "vitest";
import { tempDir } from "../support/daemon.js";
import { cvmctl, cvmdUntilExit } from "../support/processes.js";
import { postgresUrlFor } from "../support/test-database.js";

describe("cvmd and cvmctl on a PostgreSQL URL that cannot work", () => {
  const dir = tempDir();
  afterAll(() => dir.remove());

  it("a database that does not exist stops cvmd with one line naming CVM_DATABASE_URL, the password masked (exit 78)", async () => {
    const good = await postgresUrlFor(dir.path);
    const url = `${good.replace(/^postgresql:\/\/\/cvm_[0-9a-f]+/, "postgresql:///no_such_db")}&password=hunter2`;
    const { code, stderr } = await cvmdUntilExit({ CVM_DATA_DIR: dir.path, CVM_DRIVER: "none", CVM_DATABASE_URL: url });
    expect(code).toBe(78);
    expect(stderr).toMatch(/CVM_DATABASE_URL=postgresql:\/\/\/no_such_db\?.*password=\*\*\*: database "no_such_db" does not exist/);
    expect(stderr).not.toContain("hunter2");
  });

  it("cvmctl backup and restore refuse, pointing at PostgreSQL's own tools", async () => {
    const env = { CVM_DATA_DIR: dir.path, CVM_DRIVER: "none" };
    for (const args of [["backup", `${dir.path}/b.sqlite`], ["restore", `${dir.path}/b.sqlite`]]) {
      const r = await cvmctl(args, env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/PostgreSQL database.*pg_dump/);
    }
  });
});
