#!/usr/bin/env bash
# tally's whole test suite, the README's test command and what CI runs.
#
# 1. Starts a real Kafka broker, a real ClickHouse server and a real schema registry (Apicurio,
#    Confluent-compatible API) on loopback (scripts/services.sh), unless TALLY_KAFKA_BROKERS /
#    TALLY_CLICKHOUSE_URL / TALLY_SCHEMA_REGISTRY_URL name servers of yours, and makes the
#    Python venvs of the real OpenTelemetry SDK (the ingest tests' OTLP client), of
#    EcoLogits (the carbon oracle) and of Confluent's client (scripts/otel-venv.sh,
#    scripts/ecologits-venv.sh, scripts/confluent-venv.sh); and
#    Debian's chromium, which renders the HTML report in a test, and faketime, which sets the
#    clock of the README first-look test, and promtool (Debian's prometheus) for the metrics
#    and alerting-rule checks.
# 2. cargo fmt --check, cargo clippy -D warnings and cargo doc -D warnings (skip with --no-lint).
# 3. cargo test --workspace: unit, golden-file and integration tests. Integration tests fail,
#    never skip, when a server does not answer.
# Services this script started are stopped at the end; ones already running are left running.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tally-target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

lint=1
for arg in "$@"; do
  case "$arg" in
    --no-lint) lint=0 ;;
    *) echo "usage: $0 [--no-lint]" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo is missing: install Rust with rustup first" >&2; exit 1; }
if [ $lint = 1 ]; then
  for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" \
      || rustup component add "$component"
  done
fi

# Leave running what was running before (a developer's session); stop what this run starts.
status=$(scripts/services.sh status)
stop_services=1
case "$status" in *"running, pid"*|*"user's"*) stop_services=0 ;; esac
stop_services_now() {
  if [ $stop_services = 1 ]; then
    step "services: stopping what this run started"
    scripts/services.sh stop
    stop_services=0
  fi
}
trap stop_services_now EXIT
step "services: real Kafka and real ClickHouse on loopback"
scripts/services.sh start

step "test tools: the OpenTelemetry SDK (a real OTLP client), EcoLogits (the carbon oracle), Confluent's Python client (a reader of the Confluent wire format)"
TALLY_OTEL_PYTHON=$(scripts/otel-venv.sh)
TALLY_ECOLOGITS_PYTHON=$(scripts/ecologits-venv.sh)
TALLY_CONFLUENT_PYTHON=$(scripts/confluent-venv.sh)
export TALLY_OTEL_PYTHON TALLY_ECOLOGITS_PYTHON TALLY_CONFLUENT_PYTHON
echo "$TALLY_OTEL_PYTHON"
echo "$TALLY_ECOLOGITS_PYTHON"
echo "$TALLY_CONFLUENT_PYTHON"
# Headless Chromium renders the HTML report in a test (Debian's package).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the report rendering test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
chromium --version
# libfaketime sets the wall clock of the README first-look test (it runs at several times of day).
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  echo "installing Debian's faketime for the first-look test's clock"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
fi
# promtool (Debian's prometheus package) checks the scraped metrics and deploy/prometheus's
# alerting rules, and runs their unit tests.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing Debian's prometheus for promtool"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
echo "promtool: $(command -v promtool)"

if [ $lint = 1 ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy --workspace --all-targets -- -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  step "cargo doc --workspace --no-deps (warnings are errors: every crate's page must build)"
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
fi

step "cargo test --workspace (integration tests use Kafka at ${TALLY_KAFKA_BROKERS:-127.0.0.1:9092} and ClickHouse at ${TALLY_CLICKHOUSE_URL:-http://127.0.0.1:8123})"
log=$(mktemp)
set +e
cargo test --workspace --locked --no-fail-fast -- --show-output 2>&1 | tee "$log"
test_status=${PIPESTATUS[0]}
set -e
stop_services_now

# One closing line over every test binary (cargo prints one per binary, the last often a
# doc-test binary with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "\nworkspace: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$test_status"
