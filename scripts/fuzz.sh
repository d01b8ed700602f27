#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and prints what it did.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, every target)
#
# Installs what it needs when missing: the nightly toolchain (rustup) and cargo-fuzz
# (crates.io). Seeds come from the repository itself (golden Avro files, example bodies,
# the shipped catalogue and configs); the corpus grows in fuzz/corpus/<target>/ and any
# crash is written to fuzz/artifacts/<target>/, and the run fails. Every crash found becomes
# a regression test in the crate it concerns. Not part of CI's run; record runs in
# RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(ingest_json otlp github avro loaders journal)
export CARGO_TARGET_DIR=${TALLY_FUZZ_TARGET_DIR:-$HOME/.cache/tally-fuzz-target}

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

seed() { # target, files...
  local dir="$ROOT/fuzz/corpus/$1"; shift
  mkdir -p "$dir"
  for f in "$@"; do [ -f "$f" ] && cp "$f" "$dir/seed-$(basename "$f")"; done
}
for dir in fuzz/seeds/*/; do seed "$(basename "$dir")" "$dir"*; done
seed ingest_json tests/golden/*.json
seed github tests/golden/*.json
seed avro tests/golden/*.avro
seed otlp tests/golden/*.json
seed loaders services/ingest/ingest.example.toml services/processor/processor.example.toml \
  services/accounting/data/grid_intensity.csv
# The catalogue is 3 MB: its first entries are seed enough.
mkdir -p fuzz/corpus/loaders
head -c 4000 services/accounting/data/litellm_model_prices.json | sed '$ s/,[^,]*$/}/' \
  > fuzz/corpus/loaders/seed-catalogue.json

cd fuzz
# No AddressSanitizer: its flags break librdkafka's configure (rdkafka-sys builds it from
# source, and the ingest and processor crates link it). The code fuzzed is safe Rust, so
# what the fuzzer looks for is a panic, an overflow (debug assertions) or a hang, and
# libFuzzer's coverage guidance works without a sanitizer.
FUZZ=(-O --debug-assertions --sanitizer none)
cargo +nightly fuzz build "${FUZZ[@]}"
printf '%-12s %12s %10s %8s %s\n' target executions exec/s corpus result
status=0
for target in "${TARGETS[@]}"; do
  log=$(mktemp)
  if cargo +nightly fuzz run "${FUZZ[@]}" "$target" "corpus/$target" -- \
      -max_total_time="$SECS" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/artifacts/$target/ and $log)"
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(ls "corpus/$target" | wc -l)
  printf '%-12s %12s %10s %8s %s\n' "$target" "${runs:-?}" "${speed:-?}" "$corpus" "$result"
  [ "$result" = ok ] && rm -f "$log"
done
exit $status
