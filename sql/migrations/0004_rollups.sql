-- Rollups, kept up to date by materialized views on inserts into llm_calls: daily per
-- tenant x team x model x region, and hourly per tenant x team. SummingMergeTree: query them
-- with sum() and GROUP BY (parts sum up when they merge). They count what was inserted: an
-- exact replay is dropped by the insert deduplication token before it reaches them, but a
-- replay cut differently after a sink crash is counted twice here while llm_calls FINAL
-- counts it once. Use them for dashboards; use llm_calls FINAL and the views for figures
-- that must be exact.

CREATE TABLE IF NOT EXISTS llm_calls_daily
(
    day Date COMMENT 'UTC day of occurred_at',
    tenant LowCardinality(String) COMMENT 'Tenant',
    team LowCardinality(String) COMMENT 'Team',
    model LowCardinality(String) COMMENT 'Model requested',
    region LowCardinality(String) COMMENT 'Region; empty when unknown',
    calls UInt64 COMMENT 'Calls',
    unpriced_calls UInt64 COMMENT 'Calls of unknown models',
    input_tokens Int64 COMMENT 'Input tokens, including cached',
    output_tokens Int64 COMMENT 'Output tokens, including reasoning',
    cache_read_tokens Int64 COMMENT 'Cache-read tokens',
    cache_write_tokens Int64 COMMENT 'Cache-write tokens',
    reasoning_tokens Int64 COMMENT 'Reasoning tokens',
    cost_nanos Int64 COMMENT 'Cost of priced calls, nano-dollars',
    energy_uwh_central Int64 COMMENT 'Energy, central, micro-watt-hours',
    co2e_ug_low Int64 COMMENT 'CO2e, low, micrograms',
    co2e_ug_central Int64 COMMENT 'CO2e, central, micrograms',
    co2e_ug_high Int64 COMMENT 'CO2e, high, micrograms'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (tenant, team, day, model, region)
COMMENT 'Daily rollup of llm_calls per tenant x team x model x region (query with sum() ... GROUP BY)';

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_daily_mv TO llm_calls_daily
AS SELECT
    toDate(occurred_at) AS day, tenant, team, model, ifNull(region, '') AS region,
    count() AS calls, countIf(unpriced) AS unpriced_calls,
    sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens, sum(ifNull(cost_total_nanos, 0)) AS cost_nanos,
    sum(energy_uwh_central) AS energy_uwh_central, sum(co2e_ug_low) AS co2e_ug_low,
    sum(co2e_ug_central) AS co2e_ug_central, sum(co2e_ug_high) AS co2e_ug_high
FROM llm_calls
GROUP BY day, tenant, team, model, region;

CREATE TABLE IF NOT EXISTS llm_calls_hourly
(
    hour DateTime('UTC') COMMENT 'UTC hour of occurred_at',
    tenant LowCardinality(String) COMMENT 'Tenant',
    team LowCardinality(String) COMMENT 'Team',
    calls UInt64 COMMENT 'Calls',
    unpriced_calls UInt64 COMMENT 'Calls of unknown models',
    tokens Int64 COMMENT 'Input plus output tokens',
    cost_nanos Int64 COMMENT 'Cost of priced calls, nano-dollars',
    co2e_ug_central Int64 COMMENT 'CO2e, central, micrograms'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant, team, hour)
COMMENT 'Hourly rollup of llm_calls per tenant x team (query with sum() ... GROUP BY)';

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_hourly_mv TO llm_calls_hourly
AS SELECT
    toStartOfHour(occurred_at) AS hour, tenant, team,
    count() AS calls, countIf(unpriced) AS unpriced_calls,
    sum(input_tokens + output_tokens) AS tokens, sum(ifNull(cost_total_nanos, 0)) AS cost_nanos,
    sum(co2e_ug_central) AS co2e_ug_central
FROM llm_calls
GROUP BY hour, tenant, team;
