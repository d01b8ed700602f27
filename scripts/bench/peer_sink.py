"""The sink a data team would write by hand, as a peer for `tally sink` in the e2e benchmark.

Reads tally's enriched calls topic (`<prefix>tally.llm_calls_enriched.v1`) with confluent-kafka,
decodes each record's Avro single-object encoding (C3 01, the 8-byte CRC-64-AVRO fingerprint of
the writer schema, the Avro binary body) with fastavro's schemaless_reader and
schemas/EnrichedLlmCall.avsc, flattens it into the columns of ClickHouse's `llm_calls` (the
row `tally sink` writes, services/sink/src/rows.rs), inserts batches with clickhouse-connect and
commits the offsets after each insert (at least once). Batches close at 100,000 rows or 1 s
after their first row, as the sink's defaults do.

It stops once it has inserted `--expect` rows and prints one JSON line: rows, seconds.

    python scripts/bench/peer_sink.py --brokers 127.0.0.1:9092 --topic-prefix P. \
        --clickhouse http://127.0.0.1:8123 --database DB --group G --expect 100000

The packages are pinned in scripts/peer-venv.sh.
"""

import argparse
import io
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import clickhouse_connect
import fastavro
from confluent_kafka import Consumer, KafkaError

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
MARKER = b"\xc3\x01"

# `llm_calls` columns in the order of the sink's row type (cost_usd is MATERIALIZED).
COLUMNS = [
    "event_id", "occurred_at", "received_at", "enriched_at", "tenant", "team", "user",
    "service", "environment", "workflow", "session_id", "agent", "step", "parent_id",
    "trace_id", "span_id", "provider", "model", "response_model", "operation", "region",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "reasoning_tokens", "service_tier", "latency_ms", "status", "error_type", "finish_reason",
    "prompt_fingerprint", "output_fingerprint", "tool_name", "tool_args_fingerprint",
    "ticket_id", "reported_cost_micros", "tags", "unpriced", "price_catalogue_version",
    "price_entry", "canonical_model", "cost_input_nanos", "cost_cache_read_nanos",
    "cost_cache_write_nanos", "cost_output_nanos", "cost_reasoning_nanos", "cost_total_nanos",
    "energy_uwh_low", "energy_uwh_central", "energy_uwh_high", "grid_g_per_kwh",
    "grid_source", "grid_dataset_version", "co2e_ug_low", "co2e_ug_central", "co2e_ug_high",
    "carbon_method", "carbon_method_version", "kafka_partition", "kafka_offset",
]
ENRICHED_AT = COLUMNS.index("enriched_at")
FIRST_ENRICHED = COLUMNS.index("unpriced")
LAST_ENRICHED = COLUMNS.index("carbon_method_version")
CALL_FIELDS = COLUMNS[:ENRICHED_AT] + COLUMNS[ENRICHED_AT + 1:FIRST_ENRICHED]
ENRICHED_FIELDS = COLUMNS[FIRST_ENRICHED:LAST_ENRICHED + 1]


def load_schema():
    """EnrichedLlmCall as the processor writes it: self-contained, LlmCall inlined where the
    file names it, as tally's own schema loader does (so the fingerprint is the writer's).
    The raw JSON (for the fingerprint) and fastavro's parsed schema."""
    call = json.loads((SCHEMAS / "LlmCall.avsc").read_text())
    enriched = json.loads((SCHEMAS / "EnrichedLlmCall.avsc").read_text())
    for field in enriched["fields"]:
        if field["type"] in ("dev.tally.LlmCall", "LlmCall"):
            field["type"] = call
    return enriched, fastavro.parse_schema(enriched)


PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def canonical(schema, namespace="", seen=None):
    """The Parsing Canonical Form as tally's writers compute it (the Rust apache-avro crate):
    as the specification's, except that a primitive with a logical type stays an object,
    `{"type":"long"}` rather than `"long"`. fastavro's own canonical form follows the
    specification and so gives another fingerprint for these schemas."""
    seen = set() if seen is None else seen
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return json.dumps(schema)
        return json.dumps(schema if "." in schema else f"{namespace}.{schema}")
    if isinstance(schema, list):
        return "[" + ",".join(canonical(s, namespace, seen) for s in schema) + "]"
    kind = schema["type"]
    if isinstance(kind, (dict, list)):
        return canonical(kind, namespace, seen)
    if kind in PRIMITIVES:
        return '{"type":%s}' % json.dumps(kind) if "logicalType" in schema else json.dumps(kind)
    if kind == "array":
        return '{"type":"array","items":%s}' % canonical(schema["items"], namespace, seen)
    if kind == "map":
        return '{"type":"map","values":%s}' % canonical(schema["values"], namespace, seen)
    name = schema["name"]
    inner = name.rsplit(".", 1)[0] if "." in name else schema.get("namespace", namespace)
    full = name if "." in name else f"{inner}.{name}"
    if full in seen:
        return json.dumps(full)
    seen.add(full)
    if kind == "enum":
        symbols = json.dumps(schema["symbols"], separators=(",", ":"))
        return '{"name":%s,"type":"enum","symbols":%s}' % (json.dumps(full), symbols)
    if kind == "fixed":
        return '{"name":%s,"type":"fixed","size":%d}' % (json.dumps(full), schema["size"])
    fields = ",".join(
        '{"name":%s,"type":%s}' % (json.dumps(f["name"]), canonical(f["type"], inner, seen))
        for f in schema["fields"]
    )
    return '{"name":%s,"type":"record","fields":[%s]}' % (json.dumps(full), fields)


def fingerprint(raw):
    """The 8 bytes after the marker: CRC-64-AVRO of the canonical form, little-endian
    (fastavro's hex is already in that byte order)."""
    return bytes.fromhex(fastavro.schema.fingerprint(canonical(raw), "CRC-64-AVRO"))


def row(record, partition, offset):
    call = record["call"]
    out = [call[name] for name in CALL_FIELDS[:3]]
    out.append(record["enriched_at"])
    out.extend(call[name] for name in CALL_FIELDS[3:])
    out.extend(record[name] for name in ENRICHED_FIELDS)
    out.append(partition)
    out.append(offset)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic-prefix", default="")
    parser.add_argument("--clickhouse", required=True, help="http://host:port")
    parser.add_argument("--database", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True, help="stop after this many rows")
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--batch-wait", type=float, default=1.0, help="seconds")
    args = parser.parse_args()

    raw, schema = load_schema()
    expected_fingerprint = fingerprint(raw)
    url = urlparse(args.clickhouse)
    client = clickhouse_connect.get_client(
        host=url.hostname, port=url.port or 8123, database=args.database
    )
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    consumer.subscribe([f"{args.topic_prefix}tally.llm_calls_enriched.v1"])

    started = time.monotonic()
    inserted = 0
    batch, first_at = [], None
    while inserted < args.expect:
        for message in consumer.consume(num_messages=10_000, timeout=0.2):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(message.error())
            payload = message.value()
            if payload[:2] != MARKER or payload[2:10] != expected_fingerprint:
                raise RuntimeError(
                    f"offset {message.offset()}: not an EnrichedLlmCall of today's schema"
                )
            record = fastavro.schemaless_reader(io.BytesIO(payload[10:]), schema)
            batch.append(row(record, message.partition(), message.offset()))
            if first_at is None:
                first_at = time.monotonic()
        if batch and (
            len(batch) >= args.batch_rows
            or time.monotonic() - first_at >= args.batch_wait
            or inserted + len(batch) >= args.expect
        ):
            client.insert("llm_calls", batch, column_names=COLUMNS)
            consumer.commit(asynchronous=False)
            inserted += len(batch)
            batch, first_at = [], None
    consumer.close()
    print(json.dumps({"rows": inserted, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    sys.exit(main())
