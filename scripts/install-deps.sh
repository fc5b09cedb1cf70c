#!/usr/bin/env bash
# Installs the system packages cvm needs (Debian), then the npm dependencies. Idempotent: a machine
# that already has everything spends a few seconds here. Used by `make run`, `make test` and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  qemu-system-x86 qemu-utils ovmf         # the VMs (TCG here, KVM/TDX on real hosts)
  nftables iproute2 dnsmasq-base socat    # guest networks, egress cap, vsock bridge
  openssh-server openssh-client           # real sshd/ssh in tests
  mmdebstrap cryptsetup-bin erofs-utils squashfs-tools e2fsprogs cpio busybox-static zstd  # image build
  jq curl dnsutils bind9 systemd          # the contract's quickstart, DNS checks (BIND for RFC 2136), systemd-analyze
  sqlite3 iputils-ping                    # tests: reading cvmd's database, making a pool guest send traffic
  postgresql                              # tests: the store and API suites again on PostgreSQL (a throwaway cluster)
  python3 procps passwd make              # tests: tap guard stand-in, sysctl, useradd, make install
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci" >&2
  # npm ci only: it installs exactly the committed lock file and refuses one out of sync with
  # package.json, so a fresh machine never rewrites the lock. (cbor-extract is pinned by an override
  # to 2.2.2, whose prebuilt binaries the registry has; 2.2.3's are missing, which made the lock
  # unsatisfiable for npm ci.)
  npm ci --no-audit --no-fund
fi
