import { describe, expect, test } from "vitest";
import { AGENT_CHANNELS } from "../../shared/protocol/agent-channel.js";
import { agentChannelsInArgv, assertProfileConsistent, profileProblems } from "./profile-check.js";
import { PROFILES, type Profile, type ProfileTable } from "./profiles.js";
import { buildQemuArgs } from "./qemu-args.js";
import { runPaths } from "./run-dir.js";

const tamper = (name: keyof ProfileTable, change: Partial<Profile>): ProfileTable => ({ ...PROFILES, [name]: { ...PROFILES[name], ...change } });

describe("profile table", () => {
  test("both shipped profiles are consistent", () => {
    expect(profileProblems(PROFILES.plain, PROFILES)).toEqual([]);
    expect(profileProblems(PROFILES.tdx, PROFILES)).toEqual([]);
    expect(assertProfileConsistent("plain", PROFILES)).toBe(PROFILES.plain);
  });

  test("the channel read back out of each profile's argv is the one its endpoint dials", () => {
    const paths = runPaths("/var/lib/cvm", "inst-1");
    const image = { kernel: "/k", initrd: "/i", cmdline: "x", disks: [] };
    const nic = { tap: "tap2", mac: "52:54:0a:4d:00:02" };
    const size = { memoryMiB: 512, vcpus: 1 };
    const plain = buildQemuArgs({ instanceId: "inst-1", profile: "plain", accel: "tcg", ...size, image, cid: 7, nic }, paths);
    expect(agentChannelsInArgv(plain)).toEqual([{ kind: "unix", path: "/var/lib/cvm/vms/inst-1/agent.sock" }]);
    expect(PROFILES.plain.endpoint({ cid: 7 }, paths)).toEqual({ kind: "unix", path: paths.agent });
    const tdx = buildQemuArgs({ instanceId: "inst-1", profile: "tdx", accel: "tcg", ...size, image, cid: 42, nic, tdx: { firmware: "/fw" } }, paths);
    expect(agentChannelsInArgv(tdx)).toEqual([{ kind: "vsock", cid: 42, port: 1024 }]);
    expect(PROFILES.tdx.endpoint({ cid: 42 }, paths)).toEqual({ kind: "vsock", cid: 42, port: AGENT_CHANNELS.tdx.port });
  });

  test("a profile whose argv and dialed channel disagree is refused", () => {
    // tdx's devices (vhost-vsock) with plain's dialing (the chardev socket): the driver would wait on a socket nobody serves.
    const crossed = tamper("tdx", { endpoint: PROFILES.plain.endpoint });
    expect(() => assertProfileConsistent("tdx", crossed)).toThrow(/profile tdx is inconsistent:[\s\S]*creates \{"kind":"vsock","cid":4242,"port":1024\} but the driver would dial \{"kind":"unix"/);
    // plain dialing vsock while its argv has only the virtio-serial port.
    expect(() => assertProfileConsistent("plain", tamper("plain", { endpoint: PROFILES.tdx.endpoint }))).toThrow(/would dial \{"kind":"vsock"/);
    // Both channels on one command line: which one the guest listens on is no longer decided.
    const both = tamper("tdx", { channelArgs: (s, p) => [...PROFILES.tdx.channelArgs(s, p), ...PROFILES.plain.channelArgs(s, p)] });
    expect(() => assertProfileConsistent("tdx", both)).toThrow(/creates 2 agent channels/);
    // No channel at all.
    expect(() => assertProfileConsistent("plain", tamper("plain", { channelArgs: () => [] }))).toThrow(/creates 0 agent channels/);
  });

  test("a profile whose channel is not the one the guest reads, or whose firmware or measurements do not match, is refused", () => {
    expect(() => assertProfileConsistent("tdx", tamper("tdx", { channel: AGENT_CHANNELS.plain }))).toThrow(/not the one the guest listens on/);
    expect(() => assertProfileConsistent("tdx", tamper("tdx", { channel: { ...AGENT_CHANNELS.tdx, port: 2048 } }))).toThrow(/does not reach a vsock agent|not the one the guest/);
    expect(() => assertProfileConsistent("tdx", tamper("tdx", { measurements: ["rtmr3"] }))).toThrow(/not checked on mrtd, rtmr0, rtmr1, rtmr2/);
    expect(() => assertProfileConsistent("plain", tamper("plain", { firmware: "tdvf" }))).toThrow(/declares TDVF firmware but its command line loads \[\]/);
    expect(() => assertProfileConsistent("plain", tamper("plain", { name: "tdx" }))).toThrow(/named "tdx"/);
    expect(() => assertProfileConsistent("sev", PROFILES)).toThrow(/unknown profile "sev"/);
  });

  test("a virtio-serial agent port on a chardev QEMU does not serve is not a channel the host can dial", () => {
    expect(() => agentChannelsInArgv(["-chardev", "socket,id=agent0,path=/x.sock,server=off", "-device", "virtserialport,bus=vser0.0,chardev=agent0,name=org.cvm.agent.0"])).toThrow(/not backed by a server socket/);
    expect(agentChannelsInArgv(["-chardev", "socket,id=a,path=/x,,y.sock,server=on", "-device", "virtserialport,chardev=a,name=org.cvm.agent.0"])).toEqual([{ kind: "unix", path: "/x,y.sock" }]);
  });
});
