import { describe, expect, test } from "vitest";

import type { LaunchSpec } from "./hypervisor.js";
import { buildQemuArgs, qemuOptValue } from "./qemu-args.js";
import { runPaths } from "./run-dir.js";

const paths = runPaths("/var/lib/cvm", "inst-1");
const image = {
  kernel: "/img/vmlinuz",
  initrd: "/img/initrd.img",
  cmdline: "console=ttyS0 root=/dev/vda ro",
  disks: [
    { id: "root", path: "/img/rootfs.img" },
    { id: "verity", path: "/img/rootfs.verity" },
  ],
};
const base: LaunchSpec = { instanceId: "inst-1", profile: "plain", accel: "tcg", memoryMiB: 2048, vcpus: 2, image, cid: 7, nic: { tap: "tap2", mac: "52:54:0a:4d:00:02" } };

/** Values following each occurrence of an option. */
function opt(argv: string[], name: string): string[] {
  const out: string[] = [];
  argv.forEach((a, i) => {
    if (a === name) out.push(argv[i + 1]);
  });
  return out;
}

/** Parses QEMU's key=value,... option syntax (",," is a literal comma). */
function kv(s: string): Record<string, string> {
  const parts = s.replaceAll(",,", "\0").split(",").map((p) => p.replaceAll("\0", ","));
  const r: Record<string, string> = {};
  parts.forEach((p, i) => {
    const eq = p.indexOf("=");
    if (eq < 0) r[i === 0 ? "_" : p] = i === 0 ? p : "on";
    else r[p.slice(0, eq)] = p.slice(eq + 1);
  });
  return r;
}

describe("plain profile", () => {
  const argv = buildQemuArgs(base, paths);

  test("TCG with -cpu max, KVM with -cpu host", () => {
    expect(opt(argv, "-accel")).toEqual(["tcg"]);
    expect(opt(argv, "-cpu")).toEqual(["max"]);
    const kvm = buildQemuArgs({ ...base, accel: "kvm" }, paths);
    expect(opt(kvm, "-accel")).toEqual(["kvm"]);
    expect(opt(kvm, "-cpu")).toEqual(["host"]);
    expect(opt(argv, "-machine")).toEqual(["q35"]);
  });

  test("direct kernel boot from the image and read-only virtio disks in order", () => {
    expect(opt(argv, "-kernel")).toEqual(["/img/vmlinuz"]);
    expect(opt(argv, "-initrd")).toEqual(["/img/initrd.img"]);
    expect(opt(argv, "-append")).toEqual(["console=ttyS0 root=/dev/vda ro"]);
    const drives = opt(argv, "-drive").map(kv);
    expect(drives).toEqual([
      { file: "/img/rootfs.img", if: "none", id: "disk-root", format: "raw", readonly: "on" },
      { file: "/img/rootfs.verity", if: "none", id: "disk-verity", format: "raw", readonly: "on" },
    ]);
    const blk = opt(argv, "-device").filter((d) => d.startsWith("virtio-blk-pci")).map(kv);
    expect(blk.map((d) => d.drive)).toEqual(["disk-root", "disk-verity"]);
  });

  test("memory, cpus, no graphics, no reboot", () => {
    expect(opt(argv, "-m")).toEqual(["2048"]);
    expect(opt(argv, "-smp")).toEqual(["2"]);
    expect(argv).toEqual(expect.arrayContaining(["-nodefaults", "-no-user-config", "-no-reboot", "-daemonize"]));
    expect(opt(argv, "-display")).toEqual(["none"]);
    expect(argv).not.toContain("-nographic"); // QEMU rejects it together with -daemonize
    expect(opt(buildQemuArgs({ ...base, memoryMiB: 512, vcpus: 1 }, paths), "-m")).toEqual(["512"]);
  });

  test("tap NIC only, never user-mode networking", () => {
    expect(opt(argv, "-netdev").map(kv)).toEqual([{ _: "tap", id: "n0", ifname: "tap2", script: "no", downscript: "no" }]);
    expect(opt(argv, "-device").filter((d) => d.startsWith("virtio-net-pci")).map(kv)).toEqual([
      { _: "virtio-net-pci", netdev: "n0", mac: "52:54:0a:4d:00:02" },
    ]);
    expect(argv.join(" ")).not.toMatch(/-netdev user|-nic|slirp|passt|hostfwd/);
    expect(opt(argv, "-netdev").every((n) => n.startsWith("tap,"))).toBe(true);
  });

  test("serial on a socket cvmd reads (no QEMU logfile, which would grow without limit), QMP socket, pidfile, name", () => {
    const chardevs = opt(argv, "-chardev").map(kv);
    expect(chardevs.find((c) => c.id === "con0")).toEqual({
      _: "socket", id: "con0", path: "/var/lib/cvm/vms/inst-1/serial.sock", server: "on", wait: "off",
    });
    expect(argv.join(" ")).not.toMatch(/logfile=/);
    // Paused until the launcher has connected to the serial socket and sent `cont`.
    expect(argv).toContain("-S");
    expect(opt(argv, "-serial")).toEqual(["chardev:con0"]);
    expect(chardevs.find((c) => c.id === "qmp0")).toEqual({ _: "socket", id: "qmp0", path: "/var/lib/cvm/vms/inst-1/qmp.sock", server: "on", wait: "off" });
    expect(opt(argv, "-mon")).toEqual(["chardev=qmp0,mode=control"]);
    expect(opt(argv, "-pidfile")).toEqual(["/var/lib/cvm/vms/inst-1/qemu.pid"]);
    expect(opt(argv, "-name")).toEqual(["cvm-inst-1"]);
  });

  test("agent channel is a virtio-serial port backed by a server socket, no vsock", () => {
    const chardevs = opt(argv, "-chardev").map(kv);
    expect(chardevs.find((c) => c.id === "agent0")).toEqual({ _: "socket", id: "agent0", path: "/var/lib/cvm/vms/inst-1/agent.sock", server: "on", wait: "off" });
    const port = opt(argv, "-device").map(kv).find((d) => d._ === "virtserialport");
    expect(port).toEqual({ _: "virtserialport", bus: "vser0.0", chardev: "agent0", name: "org.cvm.agent.0" });
    expect(argv.join(" ")).not.toMatch(/vsock|tdx|confidential/);
  });

  test("commas in paths are doubled inside option strings", () => {
    expect(qemuOptValue("/a,b/c")).toBe("/a,,b/c");
    const a = buildQemuArgs({ ...base, image: { ...image, disks: [{ id: "root", path: "/x,y/root.img" }] } }, paths);
    expect(kv(opt(a, "-drive")[0]).file).toBe("/x,y/root.img");
  });

  test("rejects bad input", () => {
    expect(() => buildQemuArgs({ ...base, nic: { tap: "a-very-long-tap-name0", mac: base.nic.mac } }, paths)).toThrow(/tap name/);
    expect(() => buildQemuArgs({ ...base, nic: { tap: "tap2", mac: "01:00:00:00:00:01" } }, paths)).toThrow(/multicast/);
    expect(() => buildQemuArgs({ ...base, cid: 2 }, paths)).toThrow(/cid/);
    expect(() => buildQemuArgs({ ...base, profile: "tdx" }, paths)).toThrow(/firmware/);
    expect(() => runPaths("relative/dir", "x")).toThrow(/absolute/);
    expect(() => runPaths("/d", "../etc")).toThrow(/instance id/);
    expect(() => runPaths("/" + "d".repeat(100), "x")).toThrow(/exceeds/);
  });
});

describe("tdx profile (syntax of upstream QEMU >= 10.1, docs/system/i386/tdx.rst and qapi/qom.json)", () => {
  const spec: LaunchSpec = { ...base, profile: "tdx", accel: "tcg", cid: 42, memoryMiB: 4096, tdx: { firmware: "/usr/share/ovmf/OVMF.tdx.fd" } };
  const argv = buildQemuArgs(spec, paths);

  test("always KVM with the host CPU model, whatever accel says", () => {
    expect(opt(argv, "-accel")).toEqual(["kvm"]);
    expect(opt(argv, "-cpu")).toEqual(["host"]);
  });

  test("tdx-guest object in JSON form with the quote-generation socket (default vsock 2:4050)", () => {
    const objs = opt(argv, "-object");
    const tdx = objs.filter((o) => o.startsWith("{")).map((o) => JSON.parse(o));
    expect(tdx).toEqual([{ "qom-type": "tdx-guest", id: "tdx0", "quote-generation-socket": { type: "vsock", cid: "2", port: "4050" } }]);
    const custom = buildQemuArgs({ ...spec, tdx: { firmware: "/fw", qgs: { type: "unix", path: "/run/qgs.sock" } } }, paths);
    expect(JSON.parse(opt(custom, "-object")[0])["quote-generation-socket"]).toEqual({ type: "unix", path: "/run/qgs.sock" });
    const port = buildQemuArgs({ ...spec, tdx: { firmware: "/fw", qgs: { type: "vsock", cid: 2, port: 4051 } } }, paths);
    expect(JSON.parse(opt(port, "-object")[0])["quote-generation-socket"]).toEqual({ type: "vsock", cid: "2", port: "4051" });
  });

  test("q35 with confidential-guest-support, split irqchip and a memfd memory backend of -m's size", () => {
    const machine = opt(argv, "-machine");
    expect(machine).toHaveLength(1);
    expect(kv(machine[0])).toEqual({ _: "q35", "kernel-irqchip": "split", "confidential-guest-support": "tdx0", "memory-backend": "mem0" });
    const mem = opt(argv, "-object").filter((o) => o.startsWith("memory-backend")).map(kv);
    expect(mem).toEqual([{ _: "memory-backend-memfd", id: "mem0", size: "4096M" }]);
    expect(opt(argv, "-m")).toEqual(["4096"]);
  });

  test("TDVF via -bios, no pflash", () => {
    expect(opt(argv, "-bios")).toEqual(["/usr/share/ovmf/OVMF.tdx.fd"]);
    expect(argv.join(" ")).not.toMatch(/pflash|if=pflash/);
  });

  test("vhost-vsock with the assigned CID instead of the virtio-serial agent port", () => {
    expect(opt(argv, "-device").filter((d) => d.startsWith("vhost-vsock-pci")).map(kv)).toEqual([{ _: "vhost-vsock-pci", "guest-cid": "42" }]);
    expect(argv.join(" ")).not.toMatch(/virtserialport|agent\.sock/);
  });

  test("shares kernel, disks, tap NIC, serial and QMP with the plain profile", () => {
    const plain = buildQemuArgs(base, paths);
    for (const o of ["-kernel", "-initrd", "-append", "-drive", "-netdev", "-serial", "-mon", "-pidfile", "-name"]) {
      expect(opt(argv, o), o).toEqual(opt(plain, o));
    }
  });
});
