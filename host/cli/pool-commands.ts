import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Config } from "../config.js";
import { MAX_POOL_SIZE, poolImageRows, SIZE_KEY, type PoolStatus } from "../instances/warm-pool.js";
import { controlRequest, controlSocketPath, socketAnswers } from "../ops/control-socket.js";
import { PoolGuestStore, SettingsStore } from "../store/pool-guests.js";
import { UsageError, withDb, type CliContext, type Io } from "./context.js";

/**
 * `cvmctl pool`: through the running cvmd (which refills or drains at once), or, with no cvmd on
 * this data dir, read from and written to the database for the next start.
 */
export async function poolStatus(ctx: CliContext, o: { json?: boolean }): Promise<number> {
  const config = ctx.config();
  const socket = controlSocketPath(config.dataDir);
  if (!(await socketAnswers(socket))) {
    ctx.io.err("cvmd is not running on this data dir: showing what the database records");
    print(await offlineStatus(config, ctx.dbFile), o.json === true, ctx.io);
    return 0;
  }
  print(await controlRequest<PoolStatus>(socket, "GET", "/v1/pool"), o.json === true, ctx.io);
  return 0;
}

export async function poolResize(ctx: CliContext, n: string, o: { image?: string }): Promise<number> {
  if (!/^\d+$/.test(n)) throw new UsageError("usage: cvmctl pool resize N [--image ID]");
  const size = Number(n);
  const config = ctx.config();
  const socket = controlSocketPath(config.dataDir);
  if (await socketAnswers(socket)) {
    const r = await controlRequest<{ image_id: string; size: number }>(socket, "POST", "/v1/pool/size", { size, image: o.image });
    ctx.io.out(`pool of image ${r.image_id} resized to ${r.size}; cvmd is refilling or draining toward it`);
    return 0;
  }
  if (size > MAX_POOL_SIZE) throw new UsageError(`pool size must be an integer from 0 to ${MAX_POOL_SIZE}`);
  const image = o.image ?? (await currentImageId(config));
  if (!image) throw new UsageError("no current image; name one with --image");
  await withDb(config, ctx.dbFile, (db) => db.tx(() => new SettingsStore(db).set(SIZE_KEY + image, String(size), new Date())));
  ctx.io.out(`pool of image ${image} set to ${size}; cvmd applies it when it starts`);
  return 0;
}

function print(s: PoolStatus, json: boolean, io: Io): void {
  if (json) {
    io.out(JSON.stringify(s));
    return;
  }
  const rows = [["IMAGE", "SIZE", "WARM", "BOOTING", "CLAIMED", "FAILED"]];
  for (const i of s.images) rows.push([`${i.current ? "*" : " "} ${i.image_id}`, `${i.size}${i.size_source === "operator" ? "" : " (default)"}`, String(i.warm), String(i.booting), String(i.claimed), String(i.failed)]);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) io.out(r.map((v, c) => (c === r.length - 1 ? v : v.padEnd(widths[c]!))).join("  "));
  const c = s.capacity;
  io.out(`capacity: ${c.max_guests} guest(s) of ${c.guest_memory_mib} MiB / ${c.guest_vcpus} vCPU fit ${c.memory_mib} MiB / ${c.vcpus} vCPU; in use: ${c.instances} instance(s), ${c.pool_guests} pool guest(s)`);
  if (s.refill_blocked) io.out(`refill blocked: ${s.refill_blocked}`);
}

async function currentImageId(config: Config): Promise<string | null> {
  try {
    const m = JSON.parse(await readFile(join(config.vm.imageDir, "manifest.json"), "utf8")) as { image_id?: unknown };
    return typeof m.image_id === "string" ? m.image_id : null;
  } catch {
    return null;
  }
}

async function offlineStatus(config: Config, dbFile: string): Promise<PoolStatus> {
  const current = await currentImageId(config);
  return withDb(config, dbFile, async (db) => {
    const counts = await new PoolGuestStore(db).counts();
    const sizes = await new SettingsStore(db).all(SIZE_KEY);
    const vm = config.vm;
    const per = Math.min(Math.floor(config.capacity.memoryMiB / vm.memoryMiB), Math.floor(config.capacity.vcpus / vm.vcpus));
    return {
      current_image: current,
      images: poolImageRows(counts, sizes, current, config.warmPool.defaultSize),
      capacity: { max_guests: Math.max(0, per), instances: 0, pool_guests: 0, memory_mib: config.capacity.memoryMiB, vcpus: config.capacity.vcpus, guest_memory_mib: vm.memoryMiB, guest_vcpus: vm.vcpus },
      refill_blocked: "cvmd is not running",
    };
  });
}
