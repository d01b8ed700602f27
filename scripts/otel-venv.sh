#!/usr/bin/env bash
# A Python venv with the real OpenTelemetry SDK and its OTLP/HTTP exporters (protobuf and
# JSON), for the ingest tests' OpenTelemetry client (tests/otel/emit_genai_spans.py).
# Prints the venv's python; installs it first when missing. Cached in $TALLY_CACHE_DIR.
set -euo pipefail
CACHE=${TALLY_CACHE_DIR:-$HOME/.cache/tally}
# proto-http 1.45.1 and json-http 0.66b1 share opentelemetry-exporter-otlp-common 0.66b1.
PACKAGES=(
  "opentelemetry-sdk==1.45.2"
  "opentelemetry-exporter-otlp-proto-http==1.45.1"
  "opentelemetry-exporter-otlp-json-http==0.66b1"
)
VENV=$CACHE/otel-venv-1.45
if [ ! -f "$VENV/.complete" ]; then
  command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }
  echo "[otel-venv] installing ${PACKAGES[*]} into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2 || {
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
    python3 -m venv "$VENV" >&2
  }
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PACKAGES[@]}" >&2
  touch "$VENV/.complete"
fi
echo "$VENV/bin/python"
