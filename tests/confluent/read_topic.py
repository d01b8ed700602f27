"""Reads one of tally's topics with Confluent's own client, as Kafka Connect or a data team's
consumer would: confluent-kafka's DeserializingConsumer with the AvroDeserializer, which
takes the schema id from each record's Confluent header and fetches the schema from the
registry. Prints one JSON object: how many records it read, the schema ids it met, the sum of
a numeric field, and the values of another field (for the test to compare with what tally
stored).

usage: read_topic.py BROKERS REGISTRY_URL TOPIC COUNT SUM_FIELD KEY_FIELD [TIMEOUT_S]
       (a field path may go into a nested record: call.tenant)
"""
import json
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def field(record, path):
    for part in path.split("."):
        record = record[part]
    return record


def main():
    brokers, registry, topic, count, sum_field, key_field = sys.argv[1:7]
    count = int(count)
    timeout = float(sys.argv[7]) if len(sys.argv) > 7 else 60.0
    client = SchemaRegistryClient({"url": registry})
    deserialize = AvroDeserializer(client)
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "tally-test-" + uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    read, total, keys, ids = 0, 0, set(), set()
    deadline = time.monotonic() + timeout
    while read < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            raise SystemExit(f"consumer error: {message.error()}")
        raw = message.value()
        if raw[0] != 0:
            raise SystemExit(f"offset {message.offset()}: not the Confluent wire format: {raw[:5].hex()}")
        ids.add(int.from_bytes(raw[1:5], "big"))
        record = deserialize(raw, SerializationContext(topic, MessageField.VALUE))
        total += field(record, sum_field) or 0
        keys.add(field(record, key_field))
        read += 1
    consumer.close()
    print(json.dumps({"read": read, "sum": total, "keys": sorted(keys), "schema_ids": sorted(ids)}))


if __name__ == "__main__":
    main()
