#!/usr/bin/env bash
# errnomon set-up: apt packages, kernel headers for bcc, tracefs/debugfs,
# and the .venv (with system site-packages, so Debian's python3-bpfcc imports).
#
#   scripts/setup.sh          run-time needs
#   scripts/setup.sh --test   run-time needs + test tools + pytest
#
# Idempotent; when nothing is missing it only checks, which takes well under
# a second. apt/mount/header steps need root; checks do not.
set -euo pipefail

MODE=run
case "${1:-}" in
    "") ;;
    --test) MODE=test ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMP=$VENV/.stamp
KVER=$(uname -r)
export DEBIAN_FRONTEND=noninteractive

say()  { echo "errnomon setup: $*"; }
warn() { echo "errnomon setup: warning: $*" >&2; }
die()  { echo "errnomon setup: error: $*" >&2; exit 2; }
need_root() { [ "$(id -u)" -eq 0 ] || die "$1 needs root: run 'sudo make setup'"; }

# ---- apt -------------------------------------------------------------------
APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" -eq 1 ] && return 0
    say "apt-get update"
    apt-get update -q -o DPkg::Lock::Timeout=600 >/dev/null
    APT_UPDATED=1
}
apt_install() {
    need_root "installing $*"
    apt_update_once
    say "apt-get install $*"
    apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "$@" </dev/null >/dev/null
}
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
in_apt()    { apt-cache show --no-all-versions "$1" >/dev/null 2>&1; }

# Real programs the tests run against resetting peers (tests/bpf/test_real_programs.py).
REAL_PROGRAMS=(nginx curl redis-server golang-go)

# Installing nginx or redis-server starts their system services (ports 80, 6379) where an init system runs.
# Tests run their own instances; a temporary policy-rc.d keeps invoke-rc.d from starting any service during
# the install and is removed afterwards, even on failure. An existing policy-rc.d is left as it is.
POLICY_RC=/usr/sbin/policy-rc.d
OUR_POLICY=0
drop_policy() { [ "$OUR_POLICY" -eq 1 ] && rm -f "$POLICY_RC"; OUR_POLICY=0; }
apt_install_no_services() {
    need_root "installing $*"
    if [ ! -e "$POLICY_RC" ]; then
        trap drop_policy EXIT
        printf '#!/bin/sh\n# errnomon setup: no service starts while it installs packages\nexit 101\n' >"$POLICY_RC"
        chmod 755 "$POLICY_RC"
        OUR_POLICY=1
    fi
    apt_install "$@"
    drop_policy
    # and where systemd runs, not at the next boot either (only services of packages installed just now)
    if [ -d /run/systemd/system ]; then
        local p
        for p in "$@"; do
            case "$p" in nginx|redis-server) systemctl disable --quiet "$p" 2>/dev/null || true ;; esac
        done
    fi
}

PKGS=(python3-bpfcc python3-pyroute2 python3-bcrypt python3-venv python3-pip)
[ "$MODE" = test ] && PKGS+=(nftables iproute2 bpftrace bpftool prometheus tmux gcc libc6-dev systemd
                              podman runc containerd mmdebstrap containernetworking-plugins)
missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
if [ "$MODE" = test ]; then
    # a real browser engine for the HTML view of GET /errors (tests/bpf/test_errors_view.py); Debian's
    # package (Ubuntu ships chromium only as a snap)
    if ! installed chromium-headless-shell; then
        need_root "installing chromium-headless-shell"
        apt_update_once  # a fresh host has no package lists: in_apt would say no
        ! in_apt chromium-headless-shell || apt_install chromium-headless-shell
    fi
    missing=()
    for p in "${REAL_PROGRAMS[@]}"; do installed "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -eq 0 ] || apt_install_no_services "${missing[@]}"
fi

# ---- kernel headers: /lib/modules/$KVER/build ------------------------------
ARCH=$(dpkg --print-architecture)
case "$ARCH" in
    amd64|arm64) FLAVOUR=$ARCH ;;
    *) FLAVOUR= ;;
esac
BUILD=/lib/modules/$KVER/build
SOURCE=/lib/modules/$KVER/source

# Newest /usr/src/linux-headers-<ver>-<flavour> that has its -common sibling;
# prints <ver> or nothing.
newest_pair() {
    [ -n "$FLAVOUR" ] || return 0
    local d ver
    for d in /usr/src/linux-headers-*-"$FLAVOUR"; do
        [ -d "$d" ] || continue
        ver=${d#/usr/src/linux-headers-}
        ver=${ver%-"$FLAVOUR"}
        if [ -d "/usr/src/linux-headers-$ver-common" ]; then echo "$ver"; fi
    done | sort -V | tail -n 1
}
fallback_warning() {  # $1 = what happened, $2 = headers dir name
    warn "no linux-headers-$KVER $1 $2 instead: safe for errnomon, whose BPF programs read only tracepoint fields and the stable head of struct sock_common"
}
link_pair() {  # $1 = <ver>
    need_root "linking kernel headers into /lib/modules/$KVER"
    mkdir -p "/lib/modules/$KVER"
    ln -sfn "/usr/src/linux-headers-$1-$FLAVOUR" "$BUILD"
    ln -sfn "/usr/src/linux-headers-$1-common" "$SOURCE"
}

if [ -f "$BUILD/Makefile" ]; then
    # Headers resolve. If they are a fallback link (not this kernel's own
    # headers), keep it pointing at the newest installed pair and say so.
    target=$(readlink -f "$BUILD")
    case "$target" in
        /usr/src/linux-headers-"$KVER") ;;
        /usr/src/linux-headers-*-"$FLAVOUR")
            if [ -n "$FLAVOUR" ]; then
                ver=$(newest_pair)
                if [ -n "$ver" ] && [ "$target" != "/usr/src/linux-headers-$ver-$FLAVOUR" ] \
                        && [ "$(id -u)" -eq 0 ]; then
                    link_pair "$ver"
                    fallback_warning "installed; linked" "linux-headers-$ver-$FLAVOUR"
                else
                    fallback_warning "installed; using" "${target#/usr/src/}"
                fi
            fi ;;
    esac
else
    need_root "installing kernel headers for $KVER"
    apt_update_once
    if in_apt "linux-headers-$KVER"; then
        apt_install "linux-headers-$KVER"
    else
        [ -n "$FLAVOUR" ] || die "no linux-headers-$KVER in apt and no generic headers known for $ARCH: install headers at $BUILD by hand"
        installed "linux-headers-$FLAVOUR" || apt_install "linux-headers-$FLAVOUR"
        ver=$(newest_pair)
        [ -n "$ver" ] || die "linux-headers-$FLAVOUR installed but no /usr/src/linux-headers-<ver>-{$FLAVOUR,common} pair found"
        link_pair "$ver"
        fallback_warning "in apt; linked" "linux-headers-$ver-$FLAVOUR"
    fi
    [ -f "$BUILD/Makefile" ] || die "$BUILD still does not resolve to kernel headers"
fi

# ---- tracefs / debugfs -----------------------------------------------------
is_mounted() { awk -v p="$1" '$2 == p { f = 1 } END { exit !f }' /proc/self/mounts; }
mount_fs() {  # $1 = type, $2 = mountpoint
    is_mounted "$2" && return 0
    need_root "mounting $1 at $2"
    mkdir -p "$2"
    mount -t "$1" nodev "$2"
    say "mounted $1 at $2"
}
mount_fs tracefs /sys/kernel/tracing
mount_fs debugfs /sys/kernel/debug
# bcc 0.26 also uses /sys/kernel/debug/tracing; the kernel normally automounts
# tracefs there on first access once debugfs is up (the -d test triggers
# that; /sys/kernel/debug is root-only). Mount it by hand if it did not.
[ -d /sys/kernel/debug/tracing/events ] 2>/dev/null || mount_fs tracefs /sys/kernel/debug/tracing

# ---- venv --------------------------------------------------------------------
venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' 2>/dev/null &&
        grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" 2>/dev/null
}
if ! venv_ok; then
    rm -rf "$VENV"
    say "creating $VENV (system site-packages, for bcc)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

stamp_for() { { cat "$ROOT/pyproject.toml"; echo "mode=$1"; } | sha256sum | cut -d' ' -f1; }
want=$(stamp_for "$MODE")
have=$(cat "$STAMP" 2>/dev/null || true)
# A --test install is a superset of a plain one.
if [ "$have" != "$want" ] && { [ "$MODE" = test ] || [ "$have" != "$(stamp_for test)" ]; }; then
    [ -d "$ROOT/monitor" ] || die "no monitor/ package directory in $ROOT"
    spec=.
    [ "$MODE" = test ] && spec=".[test]"
    say "pip install -e '$spec' into $VENV"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input -e "$spec" </dev/null
    echo "$want" >"$STAMP"
fi

"$VENV/bin/python" -c 'import bcc' 2>/dev/null ||
    die "$VENV/bin/python cannot import bcc (python3-bpfcc): is $VENV built from /usr/bin/python3?"
say "ok ($MODE): kernel $KVER, headers $(readlink -f "$BUILD"), venv $VENV"
