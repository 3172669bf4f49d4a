#!/usr/bin/env bash
# Install errnomon as a systemd service, or remove it.
#
#   scripts/install.sh install      (make install)
#   scripts/install.sh uninstall    (make uninstall)
#
# Environment:
#   DESTDIR   staging root, prepended to every path below (default: empty, the real system)
#   PREFIX    where errnomon lives (default /opt/errnomon)
#   PURGE=1   uninstall also removes /etc/errnomon/config.yaml when it was modified
#
# What goes where:
#   $PREFIX/venv/            venv from /usr/bin/python3 --system-site-packages (bcc is Debian's
#                            python3-bpfcc), errnomon installed into it as a copy (not editable)
#   $PREFIX/bpf/             copy of the repository's bpf/ (the unit sets ERRNOMON_BPF_DIR to it:
#                            an installed package cannot find the repository's bpf/)
#   $PREFIX/README.md, $PREFIX/config.example.yaml   reference copies
#   /etc/errnomon/config.yaml          copied from config.example.yaml unless it exists (then kept)
#   /etc/systemd/system/errnomon.service   the unit (the administrator's directory: this is not a
#                            distribution package), 0644; paths rewritten when PREFIX differs
#
# install replaces $PREFIX/venv and $PREFIX/bpf on every run (an upgrade: restart the service after it).
# uninstall stops and disables the service, removes everything above, and removes the config only
# when it is unmodified (identical to config.example.yaml) or PURGE=1.
# systemctl is run only when DESTDIR is empty and systemd is running (/run/systemd/system exists).
set -euo pipefail

ACTION=${1:-}
case "$ACTION" in
    install|uninstall) ;;
    *) echo "usage: $0 install|uninstall   (env: DESTDIR, PREFIX=/opt/errnomon, PURGE=1)" >&2; exit 2 ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-/opt/errnomon}
PREFIX=${PREFIX%/}
PYTHON=${PYTHON:-/usr/bin/python3}
UNIT_NAME=errnomon.service
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/errnomon

say()  { echo "errnomon install: $*"; }
warn() { echo "errnomon install: warning: $*" >&2; }
die()  { echo "errnomon install: error: $*" >&2; exit 2; }

case "$PREFIX" in
    /?*) ;;
    *) die "PREFIX must be an absolute path, not '$PREFIX'" ;;
esac
case "$PREFIX" in
    /|/usr|/usr/local|/opt|/etc|/var|/home|/root) die "PREFIX=$PREFIX would mix errnomon into a system directory: use its own, e.g. /opt/errnomon" ;;
esac
if [ -n "$DESTDIR" ]; then
    case "$DESTDIR" in /*) ;; *) die "DESTDIR must be an absolute path, not '$DESTDIR'" ;; esac
fi

ROOT_PREFIX=$DESTDIR$PREFIX
VENV=$ROOT_PREFIX/venv
UNIT=$DESTDIR$UNIT_DIR/$UNIT_NAME
CONF=$DESTDIR$CONF_DIR/config.yaml

SRC_TMP=
trap '[ -z "$SRC_TMP" ] || rm -rf "$SRC_TMP"' EXIT

systemd_live() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }
need_write() {  # $1 = directory that must be creatable/writable
    local d=$1
    while [ ! -e "$d" ]; do d=$(dirname "$d"); done
    [ -w "$d" ] || die "cannot write to $d: run as root (sudo make $ACTION), or stage with DESTDIR=<dir>"
}

do_install() {
    local f
    for f in pyproject.toml monitor/__init__.py bpf/errnomon.bpf.c bpf/errnomon.h config.example.yaml \
             deploy/systemd/$UNIT_NAME; do
        [ -f "$REPO/$f" ] || die "$REPO/$f is missing: run from an errnomon source tree"
    done
    [ -x "$PYTHON" ] || die "$PYTHON not found: errnomon runs on the system Python, for Debian's python3-bpfcc"
    need_write "$ROOT_PREFIX"
    need_write "$DESTDIR$CONF_DIR"
    need_write "$DESTDIR$UNIT_DIR"

    # venv, rebuilt from scratch: a venv cannot be moved, so it is made in place
    say "creating $VENV (from $PYTHON, with system site-packages for bcc)"
    rm -rf "$VENV"
    mkdir -p "$ROOT_PREFIX"
    "$PYTHON" -m venv --system-site-packages "$VENV" ||
        die "$PYTHON -m venv failed: apt-get install python3-venv"

    # a non-editable install, built from a copy of the sources so that the tree gets no build/ or egg-info
    SRC_TMP=$(mktemp -d)
    local src=$SRC_TMP
    cp "$REPO/pyproject.toml" "$src/"
    cp -r "$REPO/monitor" "$src/monitor"
    find "$src" -name __pycache__ -type d -prune -exec rm -rf {} +
    local pip_args=(install --no-input --disable-pip-version-check -q)
    # Debian's python3-setuptools (>= 64) and python3-wheel build it offline; otherwise pip fetches them.
    if "$VENV/bin/python" -c 'import sys, setuptools, wheel; sys.exit(int(setuptools.__version__.split(".")[0]) < 64)' \
            2>/dev/null; then
        pip_args+=(--no-build-isolation)
    fi
    say "pip install errnomon into $VENV (a copy, not editable)"
    "$VENV/bin/python" -m pip "${pip_args[@]}" "$src" </dev/null ||
        die "pip install into $VENV failed (its messages are above)"
    [ -x "$VENV/bin/errnomon" ] || die "$VENV/bin/errnomon was not created"

    # the BPF sources, compiled by bcc at every start
    say "installing bpf/ into $ROOT_PREFIX/bpf"
    rm -rf "$ROOT_PREFIX/bpf"
    install -d -m 0755 "$ROOT_PREFIX/bpf"
    install -m 0644 "$REPO"/bpf/*.c "$REPO"/bpf/*.h "$ROOT_PREFIX/bpf/"
    install -m 0644 "$REPO/README.md" "$REPO/config.example.yaml" "$ROOT_PREFIX/"

    # config: the administrator's file is never overwritten
    install -d -m 0755 "$DESTDIR$CONF_DIR"
    if [ -e "$CONF" ]; then
        say "keeping $CONF"
    else
        install -m 0644 "$REPO/config.example.yaml" "$CONF"
        say "installed $CONF (from config.example.yaml)"
    fi

    # unit
    install -d -m 0755 "$DESTDIR$UNIT_DIR"
    if [ "$PREFIX" = /opt/errnomon ]; then
        install -m 0644 "$REPO/deploy/systemd/$UNIT_NAME" "$UNIT"
    else
        local tmp_unit
        tmp_unit=$(mktemp)
        sed "s|/opt/errnomon|$PREFIX|g" "$REPO/deploy/systemd/$UNIT_NAME" >"$tmp_unit"
        install -m 0644 "$tmp_unit" "$UNIT"
        rm -f "$tmp_unit"
    fi
    say "installed $UNIT"

    "$VENV/bin/python" -c 'import bcc' 2>/dev/null ||
        warn "$VENV/bin/python cannot import bcc: apt-get install python3-bpfcc (or run 'make setup') before starting the service"

    if systemd_live; then
        systemctl daemon-reload
        if systemctl -q is-active "$UNIT_NAME" 2>/dev/null; then
            say "errnomon is running the previous version: systemctl restart errnomon"
        else
            say "start it with: systemctl enable --now errnomon"
        fi
    else
        say "systemd is not running here${DESTDIR:+ (or DESTDIR is set)}: no systemctl daemon-reload"
    fi
}

do_uninstall() {
    need_write "$DESTDIR$UNIT_DIR"
    if systemd_live; then
        # stop and disable before the files go; a unit that is not loaded is fine
        systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
    fi
    rm -f "$UNIT"
    # enablement links left behind when systemd was not running (or under DESTDIR)
    local link
    for link in "$DESTDIR$UNIT_DIR"/*.wants/"$UNIT_NAME"; do
        if [ -L "$link" ]; then
            rm -f "$link"
            rmdir --ignore-fail-on-non-empty "$(dirname "$link")"
        fi
    done
    say "removed $UNIT"

    rm -rf "$VENV" "$ROOT_PREFIX/bpf"
    rm -f "$ROOT_PREFIX/README.md" "$ROOT_PREFIX/config.example.yaml"
    if [ -d "$ROOT_PREFIX" ]; then
        rmdir "$ROOT_PREFIX" 2>/dev/null || warn "$ROOT_PREFIX is not empty (files not installed by errnomon): left in place"
    fi
    say "removed $ROOT_PREFIX"

    if [ -e "$CONF" ]; then
        if [ "${PURGE:-0}" = 1 ] || cmp -s "$CONF" "$REPO/config.example.yaml"; then
            rm -f "$CONF"
            say "removed $CONF"
        else
            say "kept $CONF: it was modified (PURGE=1 removes it)"
        fi
    fi
    if [ -d "$DESTDIR$CONF_DIR" ]; then rmdir "$DESTDIR$CONF_DIR" 2>/dev/null || true; fi

    if systemd_live; then
        systemctl daemon-reload
    fi
}

"do_$ACTION"
