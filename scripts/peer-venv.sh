#!/usr/bin/env bash
# The hand-written peer of `tally sink` (scripts/bench/peer_sink.py): confluent-kafka
# (librdkafka, as a manylinux wheel), fastavro (Avro bodies) and clickhouse-connect (inserts
# over HTTP), pinned. Prints the venv's python; the e2e benchmark runs it.
exec "$(dirname "$0")/py-venv.sh" peer-sink-1 \
  "confluent-kafka==2.16.1" \
  "fastavro==1.13.1" \
  "clickhouse-connect==1.12.0"
