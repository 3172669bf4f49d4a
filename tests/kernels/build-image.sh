#!/usr/bin/env bash
# Build (or find in the cache) the guest image of one kernel of the matrix (tests/kernels/kernels.txt):
# a root filesystem with the distribution's kernel, matching headers, python3-bpfcc and what errnomon and
# its BPF tests need, as an ext4 disk image plus the kernel and initrd to boot it with.
#
#   tests/kernels/build-image.sh NAME     prints the image directory on stdout (the last line)
#
# Cache: $ERRNOMON_KERNEL_CACHE (default /var/tmp/errnomon-kernels)/NAME-HASH/, HASH covering this script
# and the kernel's line of kernels.txt, so a changed recipe builds a new image (older ones of NAME are
# removed). Files: rootfs.img, vmlinuz, initrd.img, build.env (versions, build time, sizes).
# Needs root, mmdebstrap and e2fsprogs. Exit 3: a package is missing from the distribution's archive.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${ERRNOMON_KERNEL_CACHE:-/var/tmp/errnomon-kernels}
NAME=${1:?usage: $0 NAME (a name from tests/kernels/kernels.txt)}

say() { echo "build-image $NAME: $*" >&2; }
die() { echo "build-image $NAME: error: $1" >&2; exit "${2:-2}"; }

line=$(awk -v n="$NAME" '$1 == n' "$HERE/kernels.txt")
[ -n "$line" ] || die "no kernel named '$NAME' in $HERE/kernels.txt"
read -r _ SUITE COMPONENTS TRUST KERNEL_PKGS <<<"$line"

# What errnomon and tests/bpf need in the guest, all from the distribution (no pip): the daemon runs from
# the read-only checkout with PYTHONPATH. kmod and mount (not essential) for the init, iproute2 and nftables
# for the scenarios, initramfs-tools because Ubuntu's kernel only recommends an initrd builder.
PKGS="python3,python3-bpfcc,python3-prometheus-client,python3-yaml,python3-waitress,python3-pyroute2,python3-pytest,iproute2,nftables,kmod,mount,initramfs-tools,$KERNEL_PKGS"

KEY=$({ cat "${BASH_SOURCE[0]}"; echo "$line"; } | sha256sum | cut -c1-12)
DIR=$CACHE/$NAME-$KEY
if [ -f "$DIR/build.env" ]; then
    echo "$DIR"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building a guest image needs root (mmdebstrap, device nodes, file ownership)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install mmdebstrap"
command -v mke2fs >/dev/null || die "mke2fs is missing: apt-get install e2fsprogs"
mkdir -p "$CACHE"
exec 9>"$CACHE/$NAME.lock"
flock 9  # one build per kernel at a time; a concurrent run waits and then finds the image
if [ -f "$DIR/build.env" ]; then echo "$DIR"; exit 0; fi

WORK=$(mktemp -d "$CACHE/.build-$NAME.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
start=$(date +%s)

opts=(--variant=essential --components="$COMPONENTS" --include="$PKGS"
      --aptopt='APT::Install-Recommends "false"'
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
      # Ubuntu's initramfs hook fixrtc fails in a chroot (and a guest on qemu's RTC needs no fixing)
      --dpkgopt='path-exclude=/usr/share/initramfs-tools/hooks/fixrtc')
if [ "$TRUST" = unsigned ]; then
    # The archive's keyring is in no package this host can install (Ubuntu's on Debian): trust the archive
    # mmdebstrap chose without a signature check. Only for this throw-away test image (README, Kernel matrix).
    opts+=(--aptopt='Acquire::AllowInsecureRepositories "true"' --aptopt='APT::Get::AllowUnauthenticated "true"'
           --setup-hook='for f in "$1"/etc/apt/sources.list "$1"/etc/apt/sources.list.d/*.list; do [ -f "$f" ] && sed -i "s/^deb \([^[]\)/deb [trusted=yes] \1/" "$f"; done; true')
fi
# Trim modules a virtual test guest never loads (its initrd is built by then; depmod runs below): of the
# drivers only virtio, block, char and the virtual network devices stay; no sound, wireless, bluetooth,
# and no file systems but the ones in use (ext4, 9p, overlay, ...).
opts+=(--customize-hook='for d in "$1"/lib/modules/*/kernel/drivers/*; do case ${d##*/} in virtio|block|char|net) ;; *) rm -rf "$d" ;; esac; done; for d in drivers/net/wireless drivers/net/ethernet drivers/net/usb drivers/net/can sound net/wireless net/mac80211 net/bluetooth fs/btrfs fs/xfs fs/ocfs2 fs/gfs2 fs/ceph fs/smb fs/cifs fs/nfs fs/nfsd fs/f2fs fs/bcachefs fs/jfs fs/reiserfs fs/ubifs fs/ntfs3 fs/dlm; do rm -rf "$1"/lib/modules/*/kernel/$d; done; rm -rf "$1"/lib/firmware "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*')
# The guest's init: mount the checkout (9p, read-only) and run the script in it, so that a changed runner
# needs no new image. Mount points exist here because the root file system is mounted read-only.
opts+=(--customize-hook='mkdir -p "$1"/mnt/src "$1"/mnt/out && cat >"$1"/sbin/errnomon-init <<"EOF" && chmod 755 "$1"/sbin/errnomon-init
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
modprobe -q 9pnet_virtio; modprobe -q 9p
if mount -t 9p -o trans=virtio,version=9p2000.L,ro src /mnt/src; then
    exec /bin/sh /mnt/src/tests/kernels/guest-init.sh
fi
echo "errnomon-init: cannot mount the checkout (9p tag src)"
echo o >/proc/sysrq-trigger
EOF')

say "mmdebstrap $SUITE ($COMPONENTS, $TRUST): $PKGS"
log=$WORK/mmdebstrap.log
if ! mmdebstrap "${opts[@]}" "$SUITE" "$ROOT" >"$log" 2>&1; then
    tail -n 25 "$log" >&2
    missing=$(grep -oE "Unable to locate package [^ ]+|Package '?[^ ']+'? has no installation candidate" "$log" |
              sort -u | tr '\n' ' ')
    [ -z "$missing" ] || die "$SUITE's archive lacks what this kernel needs (${missing% }): it cannot be tested" 3
    die "mmdebstrap $SUITE failed (see above)"
fi

kver=$(ls "$ROOT/lib/modules" | sort -V | tail -n 1)
[ -n "$kver" ] && [ -f "$ROOT/boot/vmlinuz-$kver" ] && [ -f "$ROOT/boot/initrd.img-$kver" ] ||
    die "no kernel and initrd for '$kver' after mmdebstrap (/boot: $(ls "$ROOT/boot" | tr '\n' ' '))"
chroot "$ROOT" test -d "/lib/modules/$kver/build/include" || die "no headers at /lib/modules/$kver/build in the image"
python=$(chroot "$ROOT" python3 -c 'import platform; print(platform.python_version())')
bcc=$(chroot "$ROOT" dpkg-query -W -f='${Version}' python3-bpfcc)
chroot "$ROOT" depmod -a "$kver"

mkdir -p "$WORK/out"
cp "$ROOT/boot/vmlinuz-$kver" "$WORK/out/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$WORK/out/initrd.img"
used=$(du -sm "$ROOT" | cut -f1)
size=$((used + used / 5 + 256))  # ext4 metadata and a margin; the guest writes only to tmpfs
mke2fs -q -t ext4 -L errnomon-root -O ^has_journal -d "$ROOT" "$WORK/out/rootfs.img" "${size}M" >/dev/null
end=$(date +%s)
cat >"$WORK/out/build.env" <<EOF
NAME=$NAME
SUITE=$SUITE
KERNEL=$kver
PYTHON=$python
BCC=$bcc
BUILD_SECONDS=$((end - start))
ROOTFS_MB=$used
IMAGE_MB=$(($(du -sm "$WORK/out/rootfs.img" | cut -f1) + $(du -sm "$WORK/out/initrd.img" | cut -f1) + $(du -sm "$WORK/out/vmlinuz" | cut -f1)))
EOF
for old in "$CACHE/$NAME"-*; do [ -d "$old" ] && rm -rf "$old"; done
mv "$WORK/out" "$DIR"
say "built in $((end - start)) s: kernel $kver, Python $python, bcc $bcc, $(grep IMAGE_MB "$DIR/build.env")"
echo "$DIR"
