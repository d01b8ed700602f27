//! Integration tests against the real Kafka broker and the real ClickHouse server.
//!
//! `scripts/test.sh` starts both on loopback (`scripts/services.sh start`) unless
//! `TALLY_KAFKA_BROKERS` / `TALLY_CLICKHOUSE_URL` name servers of the user's. Each test makes
//! its own topics and database, so the tests run in parallel and leave nothing behind.
mod clickhouse_roundtrip;
mod kafka_roundtrip;
mod schema_check;
mod schema_registry;
mod topics;
