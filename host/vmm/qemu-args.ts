import { VmmError, type LaunchSpec } from "./hypervisor.js";
import { PROFILES, type ProfileTable } from "./profiles.js";
import { qemuOptValue } from "./qemu-opt.js";
import type { RunPaths } from "./run-dir.js";

export { qemuOptValue };

const TAP_NAME = /^[A-Za-z0-9_.-]{1,15}$/; // IFNAMSIZ - 1
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const DISK_ID = /^[A-Za-z0-9_-]{1,20}$/; // virtio-blk serials are at most 20 bytes

function validate(spec: LaunchSpec, profiles: ProfileTable): void {
  const bad = (m: string): never => {
    throw new VmmError("invalid_spec", m);
  };
  if (!TAP_NAME.test(spec.nic.tap)) bad(`tap name ${JSON.stringify(spec.nic.tap)} is not a valid interface name`);
  if (!MAC.test(spec.nic.mac)) bad(`mac ${JSON.stringify(spec.nic.mac)} must be lowercase aa:bb:cc:dd:ee:ff`);
  if (parseInt(spec.nic.mac.slice(0, 2), 16) & 1) bad(`mac ${spec.nic.mac} is a multicast address`);
  if (!Number.isInteger(spec.cid) || spec.cid < 3 || spec.cid > 0xfffffffe) bad(`cid ${spec.cid} must be an integer in [3, 2^32-2]`);
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 64) bad(`memoryMiB ${spec.memoryMiB} must be an integer >= 64`);
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > 288) bad(`vcpus ${spec.vcpus} must be an integer in [1, 288]`);
  if (spec.image.cmdline.includes("\n")) bad("kernel command line must be a single line");
  const ids = new Set<string>();
  for (const d of spec.image.disks) {
    if (!DISK_ID.test(d.id)) bad(`disk id ${JSON.stringify(d.id)} must match ${DISK_ID}`);
    if (ids.has(d.id)) bad(`duplicate disk id ${d.id}`);
    ids.add(d.id);
  }
  if (!Object.hasOwn(profiles, spec.profile)) bad(`unknown profile ${JSON.stringify(spec.profile)}`);
  profiles[spec.profile].validate(spec);
}

/**
 * The QEMU argument vector (without the binary) for one guest. Pure: paths come from `paths`, nothing is read.
 *
 * Both profiles: direct kernel boot, read-only virtio disks, a tap NIC (never user-mode networking), the serial port on
 * a socket chardev that cvmd reads into a capped log and relays to the console, QMP on a Unix
 * socket, `-pidfile` and `-daemonize`. We daemonize rather than spawn detached because QEMU's parent only exits once
 * the devices are up, so errors in the command line surface as a failed launch with QEMU's own message, and the daemon
 * runs in its own session with stdio on /dev/null, so cvmd may die or restart without taking QEMU along.
 * `-daemonize` refuses `-nographic`, hence `-display none` plus explicit serial/monitor devices under `-nodefaults`.
 * What differs by profile (machine, firmware, agent channel) comes from its row in `profiles`.
 */
export function buildQemuArgs(spec: LaunchSpec, paths: RunPaths, profiles: ProfileTable = PROFILES): string[] {
  validate(spec, profiles);
  const profile = profiles[spec.profile];
  const a: string[] = [];
  a.push("-name", `cvm-${spec.instanceId}`);

  a.push(...profile.machineArgs(spec));
  a.push("-m", String(spec.memoryMiB), "-smp", String(spec.vcpus));
  a.push("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot");

  // -kernel/-initrd/-append/-bios/-pidfile take their value verbatim (no option parsing), so no comma escaping there.
  a.push("-kernel", spec.image.kernel, "-initrd", spec.image.initrd, "-append", spec.image.cmdline);
  for (const d of spec.image.disks) {
    a.push("-drive", `file=${qemuOptValue(d.path)},if=none,id=disk-${d.id},format=raw,readonly=on`);
    a.push("-device", `virtio-blk-pci,drive=disk-${d.id},serial=${d.id}`);
  }

  a.push("-netdev", `tap,id=n0,ifname=${spec.nic.tap},script=no,downscript=no`);
  a.push("-device", `virtio-net-pci,netdev=n0,mac=${spec.nic.mac}`);

  // No `logfile=`: QEMU would grow it without limit. cvmd reads this socket and writes a capped log (SerialCapture).
  a.push("-chardev", `socket,id=con0,path=${qemuOptValue(paths.serial)},server=on,wait=off`);
  a.push("-serial", "chardev:con0");
  // Start paused: the launcher connects the serial capture first and then sends `cont`, so no early output is lost.
  a.push("-S");
  a.push("-chardev", `socket,id=qmp0,path=${qemuOptValue(paths.qmp)},server=on,wait=off`);
  a.push("-mon", "chardev=qmp0,mode=control");

  a.push(...profile.channelArgs(spec, paths));

  a.push("-pidfile", paths.pidfile, "-daemonize");
  return a;
}
