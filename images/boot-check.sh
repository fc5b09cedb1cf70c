#!/usr/bin/env bash
# Boots a built image under QEMU TCG with no network device and checks the serial log:
# the root was opened through dm-verity, systemd reached multi-user.target and sshd runs.
# With --tamper it also boots a copy of the root with one flipped byte and checks that the
# VM does NOT get past dm-verity.
#
# Usage: images/boot-check.sh [IMAGE_DIR] [--timeout SECONDS] [--memory-mib N] [--tamper]
#        [--keep-log DIR]
# IMAGE_DIR defaults to images/out/current. Exit 0 when every check passed.
set -euo pipefail
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE_DIR="$HERE/out/current"
TIMEOUT=420
MEMORY_MIB=2048
TAMPER=0
KEEP_LOG=""
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --memory-mib) MEMORY_MIB="$2"; shift 2 ;;
    --tamper) TAMPER=1; shift ;;
    --keep-log) KEEP_LOG="$2"; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "boot-check: unknown option $1" >&2; exit 2 ;;
    *) IMAGE_DIR="$1"; shift ;;
  esac
done
IMAGE_DIR="$(realpath "$IMAGE_DIR")"
for f in vmlinuz initrd.img rootfs.img rootfs.verity cmdline.txt; do
  [ -f "$IMAGE_DIR/$f" ] || { echo "boot-check: $IMAGE_DIR/$f missing (run images/build.sh)" >&2; exit 2; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "boot-check: qemu-system-x86_64 not installed" >&2; exit 2; }

TMP="$(mktemp -d /tmp/cvm-boot-check.XXXXXX)"
QEMU_PID=""
cleanup() {
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
    kill "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
  fi
  if [ -n "$KEEP_LOG" ]; then mkdir -p "$KEEP_LOG" && cp "$TMP"/*.log "$KEEP_LOG/" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# start_qemu <rootfs image> <serial log>
start_qemu() {
  qemu-system-x86_64 -machine q35 -accel tcg -cpu max -smp 2 -m "$MEMORY_MIB" \
    -kernel "$IMAGE_DIR/vmlinuz" -initrd "$IMAGE_DIR/initrd.img" \
    -append "$(cat "$IMAGE_DIR/cmdline.txt")" \
    -drive "file=$1,if=none,id=root,format=raw,readonly=on" \
    -device virtio-blk-pci,drive=root,serial=cvm-root \
    -drive "file=$IMAGE_DIR/rootfs.verity,if=none,id=verity,format=raw,readonly=on" \
    -device virtio-blk-pci,drive=verity,serial=cvm-verity \
    -nic none \
    -device virtio-serial-pci \
    -chardev "socket,id=agent,path=$TMP/agent.sock,server=on,wait=off" \
    -device virtserialport,chardev=agent,name=org.cvm.agent.0 \
    -display none -monitor none -serial "file:$2" -no-reboot \
    >"$TMP/qemu.out" 2>&1 &
  QEMU_PID=$!
}

stop_qemu() {
  if [ -n "$QEMU_PID" ]; then
    kill "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" 2>/dev/null || true
    QEMU_PID=""
  fi
}

# wait_for <log> <seconds> <regex>...: 0 when every regex matched, 1 on timeout, 2 on failure
# markers, 3 when QEMU exited first.
wait_for() {
  local log="$1" limit="$2" start=$SECONDS all re
  shift 2
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    all=1
    for re in "$@"; do grep -Eq -- "$re" "$log" 2>/dev/null || { all=0; break; }; done
    [ "$all" -eq 0 ] || return 0
    if grep -Eq 'cvm-init: FATAL|Kernel panic' "$log" 2>/dev/null; then return 2; fi
    kill -0 "$QEMU_PID" 2>/dev/null || return 3
    sleep 1
  done
  return 1
}

fail() {
  echo "boot-check: FAIL: $*" >&2
  echo "---- last serial lines ----" >&2
  tail -n 30 "$TMP/serial.log" >&2 2>/dev/null || true
  exit 1
}

echo "boot-check: booting $(basename "$IMAGE_DIR") under TCG (${MEMORY_MIB} MiB, timeout ${TIMEOUT}s, no NIC)" >&2
T0=$SECONDS
start_qemu "$IMAGE_DIR/rootfs.img" "$TMP/serial.log"
rc=0
wait_for "$TMP/serial.log" "$TIMEOUT" 'cvm-init: root mounted read-only via dm-verity: 0 [0-9]+ verity V' || rc=$?
[ "$rc" -eq 0 ] || fail "root not mounted via dm-verity (wait status $rc)"
T_VERITY=$((SECONDS - T0))
rc=0
wait_for "$TMP/serial.log" $((TIMEOUT - T_VERITY)) 'Reached target .*Multi-User System' || rc=$?
[ "$rc" -eq 0 ] || fail "systemd did not reach multi-user.target (wait status $rc)"
T_MULTI=$((SECONDS - T0))
rc=0
wait_for "$TMP/serial.log" 60 'cvm-boot: image=[^ ]+ root=/dev/mapper/cvm-root verity=V sshd=active' || rc=$?
[ "$rc" -eq 0 ] || fail "boot report missing or not verity=V/sshd=active (wait status $rc)"
grep -Eq 'Started .*(ssh\.service|OpenBSD Secure Shell server)' "$TMP/serial.log" || fail "sshd start not logged"
grep -Eq 'Finished .*cvm-ssh-keygen\.service|Finished cvm: generate' "$TMP/serial.log" || fail "host key generation not logged"
if grep -Eq 'Failed to start|FAILED' "$TMP/serial.log"; then
  echo "boot-check: note: some unit failed:" >&2
  grep -E 'Failed to start|FAILED' "$TMP/serial.log" >&2
fi
stop_qemu
cp "$TMP/serial.log" "$TMP/boot.log"
echo "boot-check: PASS verity root mounted after ${T_VERITY}s, multi-user + sshd after ${T_MULTI}s" >&2
grep -E '^cvm-boot:' "$TMP/serial.log" >&2 || true

if [ "$TAMPER" -eq 1 ]; then
  # One flipped byte in the erofs superblock (read by the first mount) must stop the boot.
  cp --sparse=always "$IMAGE_DIR/rootfs.img" "$TMP/tampered.img"
  byte="$(od -An -tu1 -j1024 -N1 "$TMP/tampered.img" | tr -d ' ')"
  printf "$(printf '\\%03o' $(((byte + 1) % 256)))" |
    dd of="$TMP/tampered.img" bs=1 seek=1024 count=1 conv=notrunc status=none
  echo "boot-check: booting a root with byte 1024 changed ($byte -> $(((byte + 1) % 256)))" >&2
  start_qemu "$TMP/tampered.img" "$TMP/tamper.log"
  rc=0
  wait_for "$TMP/tamper.log" 180 'switching to systemd' || rc=$?
  stop_qemu
  [ "$rc" -ne 0 ] || { cp "$TMP/tamper.log" "$TMP/serial.log"; fail "tampered root booted"; }
  grep -Eq 'device-mapper: verity.*(data block|metadata block).*corrupted|verity.*corrupt' "$TMP/tamper.log" ||
    { cp "$TMP/tamper.log" "$TMP/serial.log"; fail "tampered root stopped, but not by a dm-verity corruption report"; }
  echo "boot-check: PASS tampered root refused by dm-verity: $(grep -Em1 'verity.*corrupt' "$TMP/tamper.log")" >&2
  rm -f "$TMP/tampered.img"
fi
echo "boot-check: all checks passed"
