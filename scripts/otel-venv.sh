#!/usr/bin/env bash
# The real OpenTelemetry SDK and its OTLP exporters (HTTP protobuf, HTTP JSON, gRPC), for the
# ingest tests' OpenTelemetry client (tests/otel/emit_genai_spans.py). Prints the venv's
# python. proto-http and proto-grpc 1.45.1 and json-http 0.66b1 share
# opentelemetry-exporter-otlp-common 0.66b1; grpcio comes as a manylinux wheel.
exec "$(dirname "$0")/py-venv.sh" otel-1.45-grpc \
  "opentelemetry-sdk==1.45.2" \
  "opentelemetry-exporter-otlp-proto-http==1.45.1" \
  "opentelemetry-exporter-otlp-proto-grpc==1.45.1" \
  "opentelemetry-exporter-otlp-json-http==0.66b1"
