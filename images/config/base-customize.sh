#!/bin/sh
# mmdebstrap customize hook for the cached base root ($1). Only things that depend on the
# package set belong here; the per-build overlay (units, configs) is applied by build.sh.
set -eu
root="$1"

# The kernel modules package ships no modules.dep; the initramfs builder and udev need it.
for kdir in "$root"/usr/lib/modules/*; do
  chroot "$root" depmod -a "$(basename "$kdir")"
done

# Host keys made by openssh-server's postinst would be identical in every VM: each VM makes
# its own at first boot (cvm-ssh-keygen.service) into tmpfs state.
rm -f "$root"/etc/ssh/ssh_host_*

# The tenant's login. Its home is copied to a tmpfs at boot; no password, key login only.
chroot "$root" useradd --create-home --shell /bin/bash --groups sudo --comment "cvm tenant" azureuser
chroot "$root" passwd --lock azureuser >/dev/null
chroot "$root" passwd --lock root >/dev/null

# An empty machine-id on a read-only /etc makes systemd mount a per-boot one from /run
# (and does not count as "first boot").
: > "$root"/etc/machine-id
rm -f "$root"/var/lib/dbus/machine-id

# Files that differ from build to build and mean nothing in an immutable image.
rm -f "$root"/var/cache/ldconfig/aux-cache "$root"/var/log/*.log "$root"/var/log/apt/* \
  "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/tmp/* "$root"/var/tmp/*

# A kernel package that pulled in an initramfs generator leaves an initrd we never boot.
rm -f "$root"/boot/initrd.img*
