import { access, readFile } from "node:fs/promises";
import path from "node:path";

import { VmmError, type GuestImage } from "./hypervisor.js";

/** File names inside an image dir (images/out/<id>/), fixed by the image build. */
export const IMAGE_FILES = Object.freeze({
  kernel: "vmlinuz",
  initrd: "initrd.img",
  cmdline: "cmdline.txt",
  root: "rootfs.img",
  /** dm-verity hash device; optional so an unverified development image still boots. */
  verity: "rootfs.verity",
});

/** Reads an image dir into what the command line needs; the command line text is what the image build measured. */
export async function loadGuestImage(dir: string): Promise<GuestImage> {
  const abs = path.resolve(dir);
  const f = (name: string) => path.join(abs, name);
  for (const required of [IMAGE_FILES.kernel, IMAGE_FILES.initrd, IMAGE_FILES.cmdline, IMAGE_FILES.root]) {
    try {
      await access(f(required));
    } catch {
      throw new VmmError("invalid_spec", `image ${abs} lacks ${required}`);
    }
  }
  const cmdline = (await readFile(f(IMAGE_FILES.cmdline), "utf8")).trim();
  const disks = [{ id: "root", path: f(IMAGE_FILES.root) }];
  try {
    await access(f(IMAGE_FILES.verity));
    disks.push({ id: "verity", path: f(IMAGE_FILES.verity) });
  } catch {
    /* optional */
  }
  return { kernel: f(IMAGE_FILES.kernel), initrd: f(IMAGE_FILES.initrd), cmdline, disks };
}
