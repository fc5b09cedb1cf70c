import { cp, readdir, readFile, readlink, rename, rm, stat, symlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { Config } from "../config.js";
import { verifyImageDir, type ImageManifest } from "../images/image-catalog.js";
import { openDatabase } from "../daemon.js";
import { InstanceStore } from "../store/instances.js";
import { PoolGuestStore } from "../store/pool-guests.js";
import { TenantStore } from "../store/tenants.js";
import { runPaths } from "../vmm/run-dir.js";
import { attachConsole, readSerialTail } from "../vmm/serial-console.js";
import { CliError, type CliContext } from "./context.js";
import { terminalSafe } from "./terminal-safe.js";

/** Refusals of the image and console commands: one line, exit 1. */
class VmCliError extends CliError {
  constructor(message: string) {
    super(message, 1);
  }
}

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
  const db = await openDatabase(config, { readonly: true }).catch(() => null);
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

export async function imageList(ctx: CliContext, o: { json?: boolean }): Promise<number> {
  const { root, currentLink } = imageRoot(ctx.config());
  const current = await currentId(currentLink);
  const rows: Array<{ id: string; current: boolean; created: string | null; kernel: string | null; openclaw: string | null }> = [];
  for (const name of (await readdir(root).catch(() => [])).sort()) {
    const m = await readFile(join(root, name, "manifest.json"), "utf8").then(
      (t) => JSON.parse(t) as ImageManifest & { created?: string; kernel_version?: string },
      () => null,
    );
    if (!m || name === basename(currentLink)) continue;
    rows.push({ id: m.image_id, current: name === current, created: m.created ?? null, kernel: m.kernel_version ?? null, openclaw: m.openclaw?.version ?? null });
  }
  if (o.json) ctx.io.out(JSON.stringify(rows));
  else for (const r of rows) ctx.io.out(`${r.current ? "*" : " "} ${r.id}  kernel ${r.kernel ?? "?"}  openclaw ${r.openclaw ?? "?"}`);
  return 0;
}

export async function imageAdd(ctx: CliContext, dir: string, o: { use?: boolean }): Promise<number> {
  const { root, currentLink } = imageRoot(ctx.config());
  ctx.io.err(`verifying ${dir} against its manifest…`);
  const img = await verifyImageDir(dir);
  const dest = join(root, img.id);
  if (img.dir !== dest) {
    await rm(`${dest}.partial`, { recursive: true, force: true });
    await cp(img.dir, `${dest}.partial`, { recursive: true });
    await rm(dest, { recursive: true, force: true });
    await rename(`${dest}.partial`, dest);
  }
  if (o.use) await pointCurrent(currentLink, img.id);
  ctx.io.out(`image ${img.id} added${o.use ? " and in use for new instances" : ""}`);
  return 0;
}

export async function imageUse(ctx: CliContext, id: string): Promise<number> {
  const { root, currentLink } = imageRoot(ctx.config());
  await verifyImageDir(join(root, id));
  await pointCurrent(currentLink, id);
  ctx.io.out(`new instances boot from ${id}`);
  return 0;
}

export async function imageRm(ctx: CliContext, id: string): Promise<number> {
  const config = ctx.config();
  const { root, currentLink } = imageRoot(config);
  if (id.includes("/") || id.startsWith(".")) throw new VmCliError("missing or invalid ID");
  if (id === (await currentId(currentLink))) throw new VmCliError(`image ${id} is the one new instances use; \`cvmctl image use\` another first`);
  if ((await liveImageIds(config)).has(id)) throw new VmCliError(`image ${id} is in use by a live instance`);
  await readFile(join(root, id, "manifest.json")).catch(() => {
    throw new VmCliError(`no image ${id} in ${root}`);
  });
  await rm(join(root, id), { recursive: true, force: true });
  ctx.io.out(`image ${id} removed`);
  return 0;
}

export async function consoleAttach(ctx: CliContext, name: string, o: { tenant?: string; log?: boolean; raw?: boolean }): Promise<number> {
  const config = ctx.config();
  const db = await openDatabase(config, { readonly: true });
  let runDir: string;
  try {
    const tenants = new TenantStore(db);
    const rows = (await new InstanceStore(db).list()).filter((i) => i.name === name);
    const wanted = o.tenant ? (await tenants.bySlug(o.tenant))?.id : undefined;
    if (o.tenant && wanted === undefined) throw new VmCliError(`no tenant ${o.tenant}`);
    const matches = wanted === undefined ? rows : rows.filter((i) => i.tenantId === wanted);
    if (matches.length === 0) throw new VmCliError(`no instance ${name}`);
    if (matches.length > 1) throw new VmCliError(`several tenants have an instance ${name}: add --tenant SLUG`);
    // A guest claimed from the warm pool keeps the run dir it booted under.
    const guestId = matches[0]!.runtime?.guestId;
    runDir = runPaths(config.dataDir, typeof guestId === "string" ? guestId : matches[0]!.id).dir;
  } finally {
    await db.close();
  }
  if (o.log) {
    const text = await readSerialTail(join(runDir, "serial.log"));
    ctx.io.out(o.raw ? text : terminalSafe(text, "log"));
    return 0;
  }
  const sock = join(runDir, "console.sock");
  if (!(await stat(sock).then((st) => st.isSocket(), () => false))) {
    throw new VmCliError(`${name} has no console socket: cvmd serves it while it runs and the VM is up (--log reads the log without either)`);
  }
  ctx.io.err(`attached to ${name}'s serial console; Ctrl-] detaches`);
  return await attachConsole(runDir, undefined, o.raw ? {} : { filter: (d) => terminalSafe(d, "interactive") });
}
