#!/usr/bin/env bash
# Build the errnomon container image from Debian packages, with no base image from any registry:
# mmdebstrap makes a bookworm root filesystem (python3-bpfcc, python3-prometheus-client, python3-yaml,
# python3-waitress, python3-pyroute2, python3-bcrypt (basic auth of --web.config.file) and
# errnomon's monitor/ and bpf/), podman imports it as an OCI image.
#
#   deploy/image/build.sh [IMAGE]          default IMAGE: localhost/errnomon:<version>
#
# Reproducible: a fixed package list, SOURCE_DATE_EPOCH (default: the last commit's time) clamps every
# timestamp, documentation, locales, caches and apt lists are left out; the resulting root filesystem tar
# has the same sha256 for the same inputs and archive state (printed at the end, with the package list in
# build/image/packages.txt). Needs root, mmdebstrap and podman ('scripts/setup.sh --test' installs both).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' monitor/__init__.py)
IMAGE=${1:-localhost/errnomon:$VERSION}
SUITE=bookworm
# No mirror named here: mmdebstrap takes the distribution's default archive (and its updates and security
# suites) by itself; ERRNOMON_MIRROR chooses another (a local mirror of an air-gapped site).
MIRRORS=()
[ -z "${ERRNOMON_MIRROR:-}" ] || MIRRORS=("$ERRNOMON_MIRROR")
# Everything in the image besides Essential: yes; their dependencies follow.
PACKAGES=python3,python3-bpfcc,python3-prometheus-client,python3-yaml,python3-waitress,python3-pyroute2,python3-bcrypt,xz-utils
OUT=$ROOT/build/image

die() { echo "errnomon image: error: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "building the image needs root: run 'sudo make image'"
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install mmdebstrap (or scripts/setup.sh --test)"
command -v podman >/dev/null || die "podman is missing: apt-get install podman runc (or scripts/setup.sh --test)"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
mkdir -p "$OUT"
start=$(date +%s)

# The daemon runs as 'errnomon' from /opt/errnomon with the bytecode compiled at build time (the root
# filesystem is read-only in the DaemonSet).
ENTRYPOINT='#!/bin/sh
exec /usr/bin/python3 -m monitor.cli "$@"'

mmdebstrap --quiet --variant=essential --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/bash-completion/*' \
    --customize-hook='mkdir -p "$1/opt/errnomon" "$1/etc/errnomon"' \
    --customize-hook="copy-in $ROOT/monitor $ROOT/bpf /opt/errnomon" \
    --customize-hook="upload $ROOT/config.example.yaml /etc/errnomon/config.yaml" \
    --customize-hook="printf '%s\n' '$ENTRYPOINT' > \"\$1/usr/local/bin/errnomon\"; chmod 755 \"\$1/usr/local/bin/errnomon\"" \
    --customize-hook='find "$1/opt/errnomon" -name __pycache__ -prune -exec rm -rf {} +' \
    --customize-hook='chroot "$1" python3 -m compileall -q --invalidation-mode unchecked-hash /opt/errnomon/monitor' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" > "'"$OUT"'/packages.txt"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/var/lib/dpkg/*-old "$1"/etc/machine-id "$1"/etc/ssh/ssh_host_*' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/__pycache__/*.cpython-*.opt-*.pyc' \
    "$SUITE" "$OUT/rootfs.tar" "${MIRRORS[@]}" </dev/null

podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
podman import --quiet \
    --change 'ENTRYPOINT ["/usr/local/bin/errnomon"]' \
    --change 'CMD ["--config.file=/etc/errnomon/config.yaml"]' \
    --change 'ENV PYTHONPATH=/opt/errnomon' \
    --change 'ENV ERRNOMON_BPF_DIR=/opt/errnomon/bpf' \
    --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
    --change 'EXPOSE 9779/tcp' \
    --change 'WORKDIR /' \
    --change "LABEL org.opencontainers.image.version=$VERSION" \
    "$OUT/rootfs.tar" "$IMAGE" >/dev/null

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "errnomon image: $IMAGE, $((size / 1048576)) MiB, rootfs sha256 $(sha256sum "$OUT/rootfs.tar" | cut -c1-16), $(wc -l <"$OUT/packages.txt") packages, built in $(( $(date +%s) - start ))s"
