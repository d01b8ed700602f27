#!/usr/bin/env bash
# The chaos run: the whole pipeline (two ingest, two process, sink, notify) on a Kafka broker
# and a ClickHouse server of its own, through SIGKILLs of every service, a ClickHouse and a
# Kafka outage, a 3x burst and re-sent requests; then ClickHouse is compared with the truth
# of every 202, to the token and the nano-dollar, and a table of what happened is printed.
# With --up, the same on `tally up` (SIGKILLs and a full disk on a tmpfs; needs root).
#
#   scripts/chaos.sh [--up] [SECONDS] [RATE] [SEED]     (default 600 s at 200 calls/s, seed 7)
#
# Loopback only; installs Kafka and ClickHouse (scripts/services.sh install) when missing. CI runs the
# 2-minute profile as part of the tests. Record a run in RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
scripts/services.sh install
if [ "${1:-}" = "--up" ]; then
  exec cargo test -p tally --test chaos_up -- --nocapture
fi
export TALLY_CHAOS_SECS=${1:-600} TALLY_CHAOS_RATE=${2:-200} TALLY_CHAOS_SEED=${3:-7}
exec cargo test -p tally --test chaos -- --nocapture
