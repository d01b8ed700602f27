#!/usr/bin/env bash
# Confluent's Python client (confluent-kafka with its schema registry client and Avro
# deserializer, on fastavro), the independent reader of tally's topics in the Confluent wire
# format (tests/confluent/read_topic.py). Prints the venv's python. The wheel bundles its own
# librdkafka.
exec "$(dirname "$0")/py-venv.sh" confluent-2.16 \
  "confluent-kafka[avro,schemaregistry]==2.16.1"
