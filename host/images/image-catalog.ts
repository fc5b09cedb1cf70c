import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, realpath, stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { loadGuestImage } from "../vmm/guest-image.js";
import type { GuestImage } from "../vmm/hypervisor.js";

/** The part of images/out/<id>/manifest.json cvmd relies on. */
export interface ImageManifest {
  image_id: string;
  cmdline: string;
  digests: { kernel: string; initrd: string; cmdline: string; rootfs: string; verity?: string };
  openclaw?: { version: string; tree_digest: string };
  node_version?: string;
  expected_measurements?: Record<string, unknown>;
}

export interface ResolvedImage {
  id: string;
  dir: string;
  manifest: ImageManifest;
  guest: GuestImage;
}

export class ImageError extends Error {
  override name = "ImageError";
}

const FILES: Array<[keyof ImageManifest["digests"], string]> = [
  ["kernel", "vmlinuz"],
  ["initrd", "initrd.img"],
  ["cmdline", "cmdline.txt"],
  ["rootfs", "rootfs.img"],
  ["verity", "rootfs.verity"],
];

async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/**
 * Reads an image directory and checks every file against its manifest before a guest may boot from
 * it: what QEMU loads must be what the manifest (and so the expected measurements) describes.
 * A verified directory is remembered by its files' size and mtime, so the hashing runs once.
 */
export async function verifyImageDir(dir: string, log?: Logger): Promise<ResolvedImage> {
  const real = await realpath(dir).catch(() => {
    throw new ImageError(`image directory ${dir} does not exist (build one with \`make image\`)`);
  });
  let manifest: ImageManifest;
  try {
    manifest = JSON.parse(await readFile(path.join(real, "manifest.json"), "utf8")) as ImageManifest;
  } catch (err) {
    throw new ImageError(`image ${real}: manifest.json unreadable (${(err as Error).message})`);
  }
  if (!manifest.image_id || !manifest.digests) throw new ImageError(`image ${real}: manifest.json lacks image_id or digests`);
  const started = Date.now();
  for (const [key, file] of FILES) {
    const want = manifest.digests[key];
    if (!want) continue;
    const got = await sha256File(path.join(real, file)).catch((err: Error) => {
      throw new ImageError(`image ${manifest.image_id}: cannot read ${file} (${err.message})`);
    });
    if (got !== want) throw new ImageError(`image ${manifest.image_id}: ${file} does not match its manifest digest`);
  }
  log?.info({ image: manifest.image_id, ms: Date.now() - started }, "image verified against its manifest");
  const guest = await loadGuestImage(real);
  if (guest.cmdline !== manifest.cmdline.trim()) throw new ImageError(`image ${manifest.image_id}: cmdline.txt differs from the manifest`);
  return { id: manifest.image_id, dir: real, manifest, guest };
}

/** The image new instances boot from, verified once per change of its files. */
export class ImageCatalog {
  private cached: { key: string; image: ResolvedImage } | null = null;
  private inflight: Promise<ResolvedImage> | null = null;

  constructor(private readonly o: { dir: string; logger: Logger }) {}

  async current(): Promise<ResolvedImage> {
    const key = await this.fingerprint();
    if (this.cached?.key === key) return this.cached.image;
    this.inflight ??= verifyImageDir(this.o.dir, this.o.logger)
      .then((image) => {
        this.cached = { key, image };
        return image;
      })
      .finally(() => {
        this.inflight = null;
      });
    return this.inflight;
  }

  /**
   * The manifest of image `id`: the current image's, or the one in a sibling directory named by the
   * id (the layout `make image` produces), so a guest can be checked against the image it booted from
   * after `current` moved on. Null when there is none.
   */
  async manifestOf(id: string): Promise<ImageManifest | null> {
    if (this.cached?.image.id === id) return this.cached.image.manifest;
    return (await this.manifestFile(id))?.manifest ?? null;
  }

  /** manifestOf, with the file's text as stored (what its published digest is over). */
  async manifestFile(id: string): Promise<{ text: string; manifest: ImageManifest } | null> {
    if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/.test(id)) return null;
    const real = await realpath(this.o.dir).catch(() => null);
    if (!real) return null;
    for (const dir of [real, path.join(path.dirname(real), id)]) {
      try {
        const text = await readFile(path.join(dir, "manifest.json"), "utf8");
        const manifest = JSON.parse(text) as ImageManifest;
        if (manifest?.image_id === id) return { text, manifest };
      } catch {
        // not this directory
      }
    }
    return null;
  }

  private async fingerprint(): Promise<string> {
    const real = await realpath(this.o.dir).catch(() => {
      throw new ImageError(`image directory ${this.o.dir} does not exist (build one with \`make image\`)`);
    });
    const parts = [real];
    for (const [, file] of FILES) {
      const s = await stat(path.join(real, file)).catch(() => null);
      parts.push(s ? `${file}:${s.size}:${s.mtimeMs}` : `${file}:-`);
    }
    return parts.join("|");
  }
}
