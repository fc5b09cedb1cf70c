import { access, chmod, copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";


import { run } from "../../../shared/util/run.js";
import type { LaunchSpec } from "../hypervisor.js";
import type { Needs } from "../../../test/support/prerequisites.js";

/**
 * A tiny test guest: Debian's kernel plus a busybox initramfs built on the fly. Its init loads the virtio modules,
 * gets an address with udhcpc, serves a one-line banner on TCP 22, writes to the agent's virtio-serial port and
 * runs a shell on the serial console, printing `CVM-BOOT: <phase>` markers along the way.
 */

export const TINY_BANNER = "hello from tiny guest";
export const TINY_AGENT_HELLO = "hello-agent";

/** Order matters: dependencies first. The init retries the list, so a missed order only costs a pass. */
const MODULES = ["virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_console"];

export interface TinyKernel {
  kernel: string;
  modulesDir: string;
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(() => true, () => false);
}

async function findFile(root: string, name: string): Promise<string | null> {
  for (const e of await readdir(root, { withFileTypes: true })) {
    const p = path.join(root, e.name);
    if (e.isDirectory()) {
      const f = await findFile(p, name);
      if (f) return f;
    } else if (e.name === name) return p;
  }
  return null;
}

/**
 * Kernel and the few modules the tiny guest needs, cached under `cacheDir` (git-ignored). Downloads Debian's current
 * linux-image package with apt the first time; throws when that is impossible (the caller skips with the reason).
 */
export async function ensureTinyKernel(cacheDir: string): Promise<TinyKernel> {
  const kernel = path.join(cacheDir, "vmlinuz");
  const modulesDir = path.join(cacheDir, "modules");
  if (await exists(kernel) && (await Promise.all(MODULES.map((m) => exists(path.join(modulesDir, `${m}.ko`))))).every(Boolean)) {
    return { kernel, modulesDir };
  }
  await mkdir(modulesDir, { recursive: true });
  const depends = () => run("apt-cache", ["depends", "linux-image-amd64"], { timeoutMs: 30_000 });
  // Package lists may have been cleaned after the last install; refresh them once.
  const deps = (await depends().catch(async () => {
    await run("apt-get", ["update", "-qq"], { timeoutMs: 300_000 });
    return depends();
  })).stdout;
  const pkg = /Depends: (linux-image-[0-9][^\s]*)/.exec(deps)?.[1];
  if (!pkg) throw new Error(`cannot find the kernel package behind linux-image-amd64 (apt-get update first?): ${deps.trim()}`);
  const work = await mkdtemp(path.join(cacheDir, "dl-"));
  try {
    await run("apt-get", ["download", pkg], { cwd: work, timeoutMs: 300_000 });
    const deb = (await readdir(work)).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
    const x = path.join(work, "x");
    await run("dpkg-deb", ["-x", path.join(work, deb), x], { timeoutMs: 120_000 });
    const vmlinuz = (await readdir(path.join(x, "boot"))).find((f) => f.startsWith("vmlinuz-"));
    if (!vmlinuz) throw new Error(`${deb} has no /boot/vmlinuz-*`);
    for (const m of MODULES) {
      const f = await findFile(path.join(x, "lib/modules"), `${m}.ko`);
      if (!f) throw new Error(`${deb} lacks ${m}.ko (compressed modules are not handled)`);
      await copyFile(f, path.join(modulesDir, `${m}.ko`));
    }
    await copyFile(path.join(x, "boot", vmlinuz), kernel);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return { kernel, modulesDir };
}

const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "CVM-BOOT: init"
for pass in 1 2 3; do for m in ${MODULES.join(" ")}; do [ -d /sys/module/$m ] || insmod /lib/modules/$m.ko 2>/dev/null; done; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /etc/udhcpc.script -t 20 -T 1 -A 1 -n -q || echo "CVM-BOOT: dhcp-failed"
echo "CVM-BOOT: routes [$(ip route | tr '\\n' ';')]"
nc -ll -p 22 -e /bin/banner &
echo "CVM-BOOT: listening"
for p in /sys/class/virtio-ports/*; do
  if [ "$(cat $p/name 2>/dev/null)" = org.cvm.agent.0 ]; then
    dev=/dev/\${p##*/}
    ( while true; do echo ${TINY_AGENT_HELLO} > $dev; sleep 1; done ) &
    echo "CVM-BOOT: agent-port $dev"
  fi
done
echo "CVM-BOOT: ready"
while true; do setsid cttyhack sh; done
`;

const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  bound|renew)
    ifconfig "$interface" "$ip" netmask "$subnet"
    [ -n "$router" ] && ip route add default via "$router"
    echo "CVM-BOOT: dhcp ip=$ip router=$router dns=$dns"
    ;;
esac
`;

/** Writes an uncompressed newc initramfs to `out`. */
export async function buildTinyInitramfs(out: string, k: TinyKernel, busybox = "/bin/busybox"): Promise<void> {
  const stage = await mkdtemp(path.join(os.tmpdir(), "tiny-initramfs-"));
  try {
    for (const d of ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "lib/modules"]) await mkdir(path.join(stage, d), { recursive: true });
    await copyFile(busybox, path.join(stage, "bin/busybox"));
    await chmod(path.join(stage, "bin/busybox"), 0o755);
    for (const m of MODULES) await copyFile(path.join(k.modulesDir, `${m}.ko`), path.join(stage, "lib/modules", `${m}.ko`));
    await writeFile(path.join(stage, "init"), INIT, { mode: 0o755 });
    await writeFile(path.join(stage, "etc/udhcpc.script"), UDHCPC_SCRIPT, { mode: 0o755 });
    await writeFile(path.join(stage, "bin/banner"), `#!/bin/sh\necho "${TINY_BANNER}"\n`, { mode: 0o755 });
    const files = (await run("find", [".", "-mindepth", "1"], { cwd: stage })).stdout;
    await run("cpio", ["-o", "-H", "newc", "--quiet", "-O", out], { cwd: stage, input: files, timeoutMs: 60_000 });
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/** What booting the tiny guest needs from the machine; `extra` adds a test's own tools. */
export function tinyGuestNeeds(extra: Array<[string, string[]]> = []): Needs {
  return { root: true, tools: [["qemu-system-x86_64", ["--version"]], ["ip", ["-V"]], ["cpio", ["--version"]], ["busybox", ["--help"]], ...extra] };
}

/** The tiny guest under TCG with `initrd.img` and a 1 MiB `rootfs.img` from `dir`, on the given tap. */
export function tinyGuestSpec(o: { instanceId: string; kernel: TinyKernel; dir: string; nic: { tap: string; mac: string }; netns: string }): LaunchSpec {
  return {
    instanceId: o.instanceId,
    profile: "plain",
    accel: "tcg",
    memoryMiB: 256,
    vcpus: 1,
    cid: 3,
    image: {
      kernel: o.kernel.kernel,
      initrd: path.join(o.dir, "initrd.img"),
      cmdline: "console=ttyS0 panic=-1",
      disks: [{ id: "root", path: path.join(o.dir, "rootfs.img") }],
    },
    nic: o.nic,
    netns: o.netns,
  };
}
