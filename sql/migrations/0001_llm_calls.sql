-- tally's first table: enriched LLM calls. One row per record of each derived Kafka topic, written by `tally sink`.
-- Deduplication: each table is a ReplacingMergeTree on the record's identity, so a row written
-- twice (a replayed batch) collapses at merge time; exact totals read with FINAL (or
-- aggregate by identity). Batches also carry an insert deduplication token, so an exact
-- retry is dropped at once (non_replicated_deduplication_window).
-- Statements end with a semicolon at the end of a line (the migration runner splits there).

CREATE TABLE IF NOT EXISTS llm_calls
(
    event_id String COMMENT 'Unique id of the call; the deduplication key',
    occurred_at DateTime64(6, 'UTC') COMMENT 'Event time: when the call started',
    received_at DateTime64(6, 'UTC') COMMENT 'When ingest accepted the call',
    enriched_at DateTime64(6, 'UTC') COMMENT 'When the processor priced it',
    tenant LowCardinality(String) COMMENT 'Organisation',
    team LowCardinality(String) COMMENT 'Team billed',
    user Nullable(String) COMMENT 'User on whose behalf the call was made',
    service LowCardinality(Nullable(String)) COMMENT 'Calling service',
    environment LowCardinality(Nullable(String)) COMMENT 'Deployment environment of the caller',
    workflow LowCardinality(Nullable(String)) COMMENT 'Business workflow',
    session_id Nullable(String) COMMENT 'Agent run, conversation or trace',
    agent LowCardinality(Nullable(String)) COMMENT 'Agent name',
    step Nullable(Int32) COMMENT 'Position of the call in its session',
    parent_id Nullable(String) COMMENT 'event_id of the call that caused this one',
    trace_id Nullable(String) COMMENT 'W3C trace id',
    span_id Nullable(String) COMMENT 'W3C span id',
    provider LowCardinality(String) COMMENT 'Provider that served the call',
    model LowCardinality(String) COMMENT 'Model requested',
    response_model LowCardinality(Nullable(String)) COMMENT 'Model that answered',
    operation LowCardinality(String) COMMENT 'chat, completion, embeddings, tool, ...',
    region LowCardinality(Nullable(String)) COMMENT 'Cloud region or grid zone of inference',
    input_tokens Int64 COMMENT 'Input tokens, including cache reads and writes',
    output_tokens Int64 COMMENT 'Output tokens, including reasoning',
    cache_read_tokens Int64 COMMENT 'Input tokens read from the prompt cache',
    cache_write_tokens Int64 COMMENT 'Input tokens written to the prompt cache',
    reasoning_tokens Int64 COMMENT 'Output tokens spent reasoning',
    service_tier LowCardinality(String) COMMENT 'standard, batch, priority, flex',
    latency_ms Nullable(Int64) COMMENT 'Duration of the call, ms',
    status LowCardinality(String) COMMENT 'ok or error',
    error_type LowCardinality(Nullable(String)) COMMENT 'Error class when status is error',
    finish_reason LowCardinality(Nullable(String)) COMMENT 'Why generation stopped',
    prompt_fingerprint Nullable(String) COMMENT 'Hash of the prompt; the text is never stored',
    tool_name LowCardinality(Nullable(String)) COMMENT 'Tool invoked, if any',
    tool_args_fingerprint Nullable(String) COMMENT 'Hash of the tool arguments',
    ticket_id Nullable(String) COMMENT 'Ticket the work is for',
    reported_cost_micros Nullable(Int64) COMMENT 'Cost the gateway reported, micro-dollars (comparison only)',
    tags Map(String, String) COMMENT 'Client labels',
    unpriced Bool COMMENT 'True when the model matched no catalogue entry: every cost column is NULL',
    price_catalogue_version LowCardinality(String) COMMENT 'Catalogue the call was priced with',
    price_entry LowCardinality(Nullable(String)) COMMENT 'Catalogue key matched',
    cost_input_nanos Nullable(Int64) COMMENT 'Uncached input cost, nano-dollars',
    cost_cache_read_nanos Nullable(Int64) COMMENT 'Cache-read cost, nano-dollars',
    cost_cache_write_nanos Nullable(Int64) COMMENT 'Cache-write cost, nano-dollars',
    cost_output_nanos Nullable(Int64) COMMENT 'Non-reasoning output cost, nano-dollars',
    cost_reasoning_nanos Nullable(Int64) COMMENT 'Reasoning cost, nano-dollars',
    cost_total_nanos Nullable(Int64) COMMENT 'Total cost, nano-dollars (NULL when unpriced, never 0)',
    cost_usd Nullable(Decimal(38, 9)) MATERIALIZED toDecimal128(cost_total_nanos, 9) / 1000000000 COMMENT 'Total cost in US dollars, exact',
    energy_uwh_low Int64 COMMENT 'Energy, low estimate, micro-watt-hours',
    energy_uwh_central Int64 COMMENT 'Energy, central estimate, micro-watt-hours',
    energy_uwh_high Int64 COMMENT 'Energy, high estimate, micro-watt-hours',
    grid_g_per_kwh Float64 COMMENT 'Grid carbon intensity used, g CO2e/kWh',
    grid_source LowCardinality(String) COMMENT 'hourly, annual, world or configured',
    grid_dataset_version LowCardinality(String) COMMENT 'Grid dataset or feed version',
    co2e_ug_low Int64 COMMENT 'CO2e, low estimate, micrograms',
    co2e_ug_central Int64 COMMENT 'CO2e, central estimate, micrograms',
    co2e_ug_high Int64 COMMENT 'CO2e, high estimate, micrograms',
    carbon_method LowCardinality(String) COMMENT 'simple or ecologits',
    carbon_method_version LowCardinality(String) COMMENT 'Method and coefficient versions',
    kafka_partition Int32 COMMENT 'Partition of tally.llm_calls_enriched.v1 the row came from',
    kafka_offset Int64 COMMENT 'Offset it came from'
)
ENGINE = ReplacingMergeTree(enriched_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, team, toDate(occurred_at), event_id)
SETTINGS non_replicated_deduplication_window = 10000
COMMENT 'One row per priced and carbon-rated LLM call (tally.llm_calls_enriched.v1). Read with FINAL for exact totals.';
