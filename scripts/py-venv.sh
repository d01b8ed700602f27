#!/usr/bin/env bash
# A cached Python venv with pinned packages, for tests that use a real Python library as a
# client or an oracle. Prints the venv's python; creates it first when missing.
#
#   scripts/py-venv.sh NAME PACKAGE==VERSION...
#
# Venvs live in $TALLY_CACHE_DIR (default ~/.cache/tally)/venv-NAME.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 NAME PACKAGE==VERSION..." >&2; exit 2; }
NAME=$1; shift
VENV=${TALLY_CACHE_DIR:-$HOME/.cache/tally}/venv-$NAME
if [ ! -f "$VENV/.complete" ]; then
  command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }
  echo "[py-venv] installing $* into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2 || {
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    python3 -m venv "$VENV" >&2
  }
  "$VENV/bin/pip" install -q --disable-pip-version-check "$@" >&2
  touch "$VENV/.complete"
fi
echo "$VENV/bin/python"
