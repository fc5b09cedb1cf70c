import { cp, readdir, readFile, readlink, rename, rm, stat, symlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Config } from "../config.js";
import { ImageError, verifyImageDir, type ImageManifest } from "../images/image-catalog.js";
import { Database } from "../store/db.js";
import { InstanceStore } from "../store/instances.js";
import { PoolGuestStore } from "../store/pool-guests.js";
import { TenantStore } from "../store/tenants.js";
import { runPaths } from "../vmm/run-dir.js";
import { attachConsole, readSerialTail } from "../vmm/serial-console.js";
import { terminalSafe } from "./terminal-safe.js";

export const VM_USAGE = `  image list [--json]             guest images beside CVM_IMAGE_DIR; * marks the one new instances use
  image add DIR [--use]           verify an image directory against its manifest and copy it in
  image use ID                    boot new instances from image ID
  image rm ID                     remove an image no live instance and no default uses
  console NAME [--tenant SLUG] [--log] [--raw]
                                  attach to an instance's serial console (Ctrl-] detaches); --log prints its log;
                                  guest control bytes are shown escaped unless --raw`;

export const VM_OPTIONS = { use: { type: "boolean" as const, default: false }, log: { type: "boolean" as const, default: false }, raw: { type: "boolean" as const, default: false } };

interface Io {
  out(line: string): void;
  err(line: string): void;
}

class VmCliError extends Error {}

/** The image root is the directory holding the `current` link (images/out by default). */
function imageRoot(config: Config): { root: string; currentLink: string } {
  const dir = config.vm.imageDir;
  return { root: dirname(dir), currentLink: dir };
}

async function currentId(link: string): Promise<string | null> {
  return readlink(link).then(
    (t) => basename(t),
    () => null,
  );
}

async function pointCurrent(link: string, id: string): Promise<void> {
  const tmp = `${link}.tmp-${process.pid}`;
  await symlink(id, tmp);
  await rename(tmp, link);
}

async function liveImageIds(config: Config): Promise<Set<string>> {
  const db = await Database.open(join(config.dataDir, "cvm.sqlite"), { readonly: true }).catch(() => null);
  if (!db) return new Set();
  try {
    const live = await new InstanceStore(db).list({ statuses: ["provisioning", "ready", "failed", "terminating"] });
    const ids = new Set(live.map((i) => i.runtime?.imageId).filter((x): x is string => typeof x === "string"));
    // Warm-pool guests run from their image's files too, until they are drained.
    for (const g of await new PoolGuestStore(db).live().catch(() => [])) ids.add(g.imageId);
    return ids;
  } finally {
    await db.close();
  }
}

/** `image …` and `console …`; returns undefined when the command is not one of these. */
export async function runVmCommand(
  positionals: string[],
  values: { json?: boolean; use?: boolean; log?: boolean; raw?: boolean; tenant?: string },
  config: Config,
  io: Io,
): Promise<number | undefined> {
  const [cmd, sub, arg] = positionals;
  try {
    if (cmd === "image") {
      const { root, currentLink } = imageRoot(config);
      const current = await currentId(currentLink);
      if (sub === "list") {
        const rows: Array<{ id: string; current: boolean; created: string | null; kernel: string | null; openclaw: string | null }> = [];
        for (const name of (await readdir(root).catch(() => [])).sort()) {
          const m = await readFile(join(root, name, "manifest.json"), "utf8").then(
            (t) => JSON.parse(t) as ImageManifest & { created?: string; kernel_version?: string },
            () => null,
          );
          if (!m || name === basename(currentLink)) continue;
          rows.push({ id: m.image_id, current: name === current, created: m.created ?? null, kernel: m.kernel_version ?? null, openclaw: m.openclaw?.version ?? null });
        }
        if (values.json) io.out(JSON.stringify(rows));
        else for (const r of rows) io.out(`${r.current ? "*" : " "} ${r.id}  kernel ${r.kernel ?? "?"}  openclaw ${r.openclaw ?? "?"}`);
        return 0;
      }
      if (sub === "add") {
        if (!arg) throw new VmCliError("missing DIR");
        io.err(`verifying ${arg} against its manifest…`);
        const img = await verifyImageDir(arg);
        const dest = join(root, img.id);
        if (img.dir !== dest) {
          await rm(`${dest}.partial`, { recursive: true, force: true });
          await cp(img.dir, `${dest}.partial`, { recursive: true });
          await rm(dest, { recursive: true, force: true });
          await rename(`${dest}.partial`, dest);
        }
        if (values.use) await pointCurrent(currentLink, img.id);
        io.out(`image ${img.id} added${values.use ? " and in use for new instances" : ""}`);
        return 0;
      }
      if (sub === "use") {
        if (!arg) throw new VmCliError("missing ID");
        await verifyImageDir(join(root, arg));
        await pointCurrent(currentLink, arg);
        io.out(`new instances boot from ${arg}`);
        return 0;
      }
      if (sub === "rm") {
        if (!arg || arg.includes("/") || arg.startsWith(".")) throw new VmCliError("missing or invalid ID");
        if (arg === current) throw new VmCliError(`image ${arg} is the one new instances use; \`cvmctl image use\` another first`);
        if ((await liveImageIds(config)).has(arg)) throw new VmCliError(`image ${arg} is in use by a live instance`);
        await readFile(join(root, arg, "manifest.json")).catch(() => {
          throw new VmCliError(`no image ${arg} in ${root}`);
        });
        await rm(join(root, arg), { recursive: true, force: true });
        io.out(`image ${arg} removed`);
        return 0;
      }
      throw new VmCliError(`unknown image command: ${sub ?? ""}`);
    }
    if (cmd === "console") {
      if (!sub) throw new VmCliError("missing NAME");
      const db = await Database.open(join(config.dataDir, "cvm.sqlite"), { readonly: true });
      let runDir: string;
      try {
        const tenants = new TenantStore(db);
        const rows = (await new InstanceStore(db).list()).filter((i) => i.name === sub);
        const wanted = values.tenant ? (await tenants.bySlug(values.tenant))?.id : undefined;
        if (values.tenant && wanted === undefined) throw new VmCliError(`no tenant ${values.tenant}`);
        const matches = wanted === undefined ? rows : rows.filter((i) => i.tenantId === wanted);
        if (matches.length === 0) throw new VmCliError(`no instance ${sub}`);
        if (matches.length > 1) throw new VmCliError(`several tenants have an instance ${sub}: add --tenant SLUG`);
        // A guest claimed from the warm pool keeps the run dir it booted under.
        const guestId = matches[0]!.runtime?.guestId;
        runDir = runPaths(config.dataDir, typeof guestId === "string" ? guestId : matches[0]!.id).dir;
      } finally {
        await db.close();
      }
      if (values.log) {
        const text = await readSerialTail(join(runDir, "serial.log"));
        io.out(values.raw ? text : terminalSafe(text, "log"));
        return 0;
      }
      const sock = join(runDir, "console.sock");
      if (!(await stat(sock).then((st) => st.isSocket(), () => false))) {
        throw new VmCliError(`${sub} has no console socket: cvmd serves it while it runs and the VM is up (--log reads the log without either)`);
      }
      io.err(`attached to ${sub}'s serial console; Ctrl-] detaches`);
      return await attachConsole(runDir, undefined, values.raw ? {} : { filter: (d) => terminalSafe(d, "interactive") });
    }
  } catch (err) {
    if (err instanceof VmCliError || err instanceof ImageError) {
      io.err(`cvmctl: ${err.message}`);
      return 1;
    }
    throw err;
  }
  return undefined;
}
