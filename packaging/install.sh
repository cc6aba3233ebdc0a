#!/bin/sh
# surveil installer / upgrader / uninstaller. Ships at the top of the bundle tarball.
#
#   tar xzf surveil-<ver>-linux-x86_64.tar.gz
#   sudo ./surveil-<ver>-linux-x86_64/install.sh                 # /opt/surveil, /var/lib/surveil
#   ./surveil-<ver>-linux-x86_64/install.sh --prefix ~/surveil   # unprivileged user
#   ./install.sh --tarball surveil-<ver>-linux-x86_64.tar.gz     # verify .sha256 and unpack in place
#   sudo /opt/surveil/current/install.sh --uninstall             # removes code, keeps data
#
# Layout: PREFIX/releases/<version>/ (the bundle), PREFIX/current -> releases/<version>,
# BIN_DIR/surveil -> PREFIX/current/surveil, PREFIX/install.conf (what was installed where).
# Re-running with a newer bundle installs it beside the old one, switches `current` atomically,
# keeps the previous release for rollback, and never touches the data directory.
set -eu

usage() {
    cat <<EOF
usage: install.sh [--prefix DIR] [--bin-dir DIR] [--data-dir DIR] [--owner USER]
                  [--tarball FILE] [--no-init] [--uninstall] [--help]
  --prefix DIR    where the code goes        (default: /opt/surveil; required when not root)
  --bin-dir DIR   where the surveil link goes (default: /usr/local/bin as root, PREFIX/bin otherwise)
  --data-dir DIR  data directory for 'surveil init' (default: /var/lib/surveil as root,
                  \${XDG_DATA_HOME:-\$HOME/.local/share}/surveil otherwise); never modified if
                  it already exists
  --owner USER    as root: chown a newly created data directory to USER (the service account)
  --tarball FILE  install from FILE (checked against FILE.sha256 when present) instead of the
                  directory this script sits in
  --no-init       do not run 'surveil init'
  --uninstall     remove the code and the link, keep the data directory
EOF
}

say() { printf '%s\n' "install.sh: $*"; }
die() { printf '%s\n' "install.sh: error: $*" >&2; exit 1; }

PREFIX="" BIN_DIR="" DATA_DIR="" OWNER="" TARBALL="" DO_INIT=1 UNINSTALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?}; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --bin-dir) BIN_DIR=${2:?}; shift 2 ;;
        --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
        --data-dir) DATA_DIR=${2:?}; shift 2 ;;
        --data-dir=*) DATA_DIR=${1#*=}; shift ;;
        --owner) OWNER=${2:?}; shift 2 ;;
        --owner=*) OWNER=${1#*=}; shift ;;
        --tarball) TARBALL=${2:?}; shift 2 ;;
        --tarball=*) TARBALL=${1#*=}; shift ;;
        --no-init) DO_INIT=0; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1
if [ -z "$PREFIX" ]; then
    [ "$IS_ROOT" -eq 1 ] || die "not root: pass --prefix DIR (e.g. --prefix \$HOME/surveil)"
    PREFIX=/opt/surveil
fi
case "$PREFIX" in /*) ;; *) PREFIX="$(pwd)/$PREFIX" ;; esac
PREFIX=${PREFIX%/}
CONF="$PREFIX/install.conf"

# Settings of a previous install win over defaults (an upgrade keeps bin and data locations).
if [ -f "$CONF" ]; then
    # shellcheck disable=SC1090
    prev_bin=$(sed -n 's/^BIN_DIR=//p' "$CONF"); prev_data=$(sed -n 's/^DATA_DIR=//p' "$CONF")
    [ -n "$BIN_DIR" ] || BIN_DIR=$prev_bin
    [ -n "$DATA_DIR" ] || DATA_DIR=$prev_data
fi
if [ -z "$BIN_DIR" ]; then
    if [ "$IS_ROOT" -eq 1 ]; then BIN_DIR=/usr/local/bin; else BIN_DIR="$PREFIX/bin"; fi
fi
if [ -z "$DATA_DIR" ]; then
    if [ "$IS_ROOT" -eq 1 ]; then DATA_DIR=/var/lib/surveil
    else DATA_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/surveil"; fi
fi
case "$DATA_DIR" in /*) ;; *) DATA_DIR="$(pwd)/$DATA_DIR" ;; esac

if [ "$UNINSTALL" -eq 1 ]; then
    [ -d "$PREFIX/releases" ] || [ -L "$PREFIX/current" ] || die "no surveil install under $PREFIX"
    link="$BIN_DIR/surveil"
    if [ -L "$link" ] && case "$(readlink "$link")" in "$PREFIX"/*) true ;; *) false ;; esac; then
        rm -f "$link"; say "removed link $link"
    fi
    rm -rf "$PREFIX/releases" "$PREFIX/current" "$CONF"
    say "removed code under $PREFIX (releases/, current, install.conf)"
    [ "$BIN_DIR" = "$PREFIX/bin" ] && rmdir "$BIN_DIR" 2>/dev/null || true
    rmdir "$PREFIX" 2>/dev/null && say "removed empty $PREFIX" || true
    say "kept data directory $DATA_DIR (delete it yourself if you really want the data gone)"
    exit 0
fi

# --- locate the bundle -------------------------------------------------------------------------
TMP=""
cleanup() { [ -n "$TMP" ] && rm -rf "$TMP"; return 0; }
trap cleanup EXIT INT TERM
if [ -n "$TARBALL" ]; then
    [ -f "$TARBALL" ] || die "no such tarball: $TARBALL"
    if [ -f "$TARBALL.sha256" ]; then
        (cd "$(dirname "$TARBALL")" && sha256sum -c --status "$(basename "$TARBALL").sha256") \
            || die "SHA-256 mismatch for $TARBALL"
        say "verified SHA-256 of $TARBALL"
    fi
    mkdir -p "$PREFIX/releases"
    TMP=$(mktemp -d "$PREFIX/releases/.unpack.XXXXXX")
    tar -xzf "$TARBALL" -C "$TMP"
    SRC=$(find "$TMP" -mindepth 1 -maxdepth 1 -type d | head -n 1)
else
    SRC=$(cd "$(dirname "$0")" && pwd)
fi
[ -x "$SRC/surveil" ] && [ -d "$SRC/_internal" ] || die "$SRC does not look like a surveil bundle"
VERSION=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$SRC/BUILD_INFO.json" | head -n 1)
COMMIT=$(sed -n 's/.*"git_commit": *"\([^"]*\)".*/\1/p' "$SRC/BUILD_INFO.json" | head -n 1)
[ -n "$VERSION" ] || die "cannot read the version from $SRC/BUILD_INFO.json"
REL_NAME="$VERSION-$(printf '%s' "$COMMIT" | cut -c1-12)"
REL="$PREFIX/releases/$REL_NAME"

# --- install the code --------------------------------------------------------------------------
mkdir -p "$PREFIX/releases"
PREV=""
[ -L "$PREFIX/current" ] && PREV=$(readlink "$PREFIX/current")
if [ "$SRC" = "$REL" ]; then
    :
elif [ -n "$TMP" ]; then
    rm -rf "$REL"; mv "$SRC" "$REL"
else
    rm -rf "$REL.new"; cp -a "$SRC" "$REL.new"; rm -rf "$REL"; mv "$REL.new" "$REL"
fi
chmod -R go-w "$REL"
ln -sfn "releases/$REL_NAME" "$PREFIX/current.new" && mv -T "$PREFIX/current.new" "$PREFIX/current"
say "installed surveil $VERSION (commit $COMMIT) into $REL"
if [ -n "$PREV" ] && [ "$PREV" != "releases/$REL_NAME" ]; then
    say "upgraded from $PREV; it is kept for rollback (ln -sfn $PREV $PREFIX/current)"
fi
# Keep only the current and the previous release.
for d in "$PREFIX"/releases/*; do
    [ -d "$d" ] || continue
    case "releases/$(basename "$d")" in "releases/$REL_NAME"|"$PREV") ;; *) rm -rf "$d"; say "removed old release $d" ;; esac
done

mkdir -p "$BIN_DIR"
ln -sfn "$PREFIX/current/surveil" "$BIN_DIR/surveil"
say "linked $BIN_DIR/surveil -> $PREFIX/current/surveil"
case ":$PATH:" in *":$BIN_DIR:"*) ;; *) say "note: $BIN_DIR is not on PATH" ;; esac
printf 'PREFIX=%s\nBIN_DIR=%s\nDATA_DIR=%s\nVERSION=%s\nCOMMIT=%s\n' \
    "$PREFIX" "$BIN_DIR" "$DATA_DIR" "$VERSION" "$COMMIT" > "$CONF"

# --- data directory ----------------------------------------------------------------------------
if [ "$DO_INIT" -eq 0 ]; then
    say "skipped 'surveil init' (--no-init); data directory would be $DATA_DIR"
elif [ -d "$DATA_DIR" ] && [ -n "$(ls -A "$DATA_DIR" 2>/dev/null)" ]; then
    say "data directory $DATA_DIR exists: left untouched"
else
    "$PREFIX/current/surveil" init "$DATA_DIR"
    if [ -n "$OWNER" ]; then
        [ "$IS_ROOT" -eq 1 ] || die "--owner needs root"
        chown -R "$OWNER" "$DATA_DIR"; say "data directory owned by $OWNER"
    fi
    say "initialised data directory $DATA_DIR"
fi
"$PREFIX/current/surveil" version >/dev/null 2>&1 || say "warning: 'surveil version' failed"
say "done. Try: $BIN_DIR/surveil demo"
