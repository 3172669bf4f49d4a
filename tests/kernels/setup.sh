#!/usr/bin/env bash
# Host tools of the kernel matrix (make test-kernels): mmdebstrap builds the guest images, qemu boots them,
# e2fsprogs makes the disk image, distro-info-data lets mmdebstrap find Ubuntu's archive for jammy.
# Idempotent: installs only what is missing.
set -euo pipefail
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
missing=()
for p in mmdebstrap qemu-system-x86 e2fsprogs distro-info-data; do installed "$p" || missing+=("$p"); done
[ "${#missing[@]}" -eq 0 ] && exit 0
[ "$(id -u)" -eq 0 ] || { echo "test-kernels: installing ${missing[*]} needs root: run 'sudo make test-kernels'" >&2; exit 2; }
echo "test-kernels: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" </dev/null >/dev/null
