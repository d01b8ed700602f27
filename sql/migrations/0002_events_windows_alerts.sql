-- Deploys, tickets, spend windows, loop signals and alerts: one row per record of their
-- Kafka topics, written by `tally sink`. Each is a ReplacingMergeTree on the record's identity
-- (see sql/README.md: read with FINAL for exact figures).

CREATE TABLE IF NOT EXISTS deploys
(
    event_id String COMMENT 'Unique id of the deploy event',
    occurred_at DateTime64(6, 'UTC') COMMENT 'When the deploy reached this status',
    received_at DateTime64(6, 'UTC') COMMENT 'When ingest accepted it',
    tenant LowCardinality(String) COMMENT 'Organisation',
    team LowCardinality(String) COMMENT 'Team owning the service',
    service LowCardinality(String) COMMENT 'Service deployed',
    environment LowCardinality(String) COMMENT 'Environment deployed to',
    version Nullable(String) COMMENT 'Version or release deployed',
    commit_sha Nullable(String) COMMENT 'Commit deployed',
    status LowCardinality(String) COMMENT 'succeeded, failed or rolled_back',
    ticket_ids Array(String) COMMENT 'Tickets the deploy ships',
    url Nullable(String) COMMENT 'Link to the deploy'
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, team, service, environment, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000
COMMENT 'Deploys (tally.deploys.v1): what shipped, to join spend to.';

CREATE TABLE IF NOT EXISTS tickets
(
    event_id String COMMENT 'Unique id of the ticket event',
    occurred_at DateTime64(6, 'UTC') COMMENT 'When the ticket changed status',
    received_at DateTime64(6, 'UTC') COMMENT 'When ingest accepted it',
    tenant LowCardinality(String) COMMENT 'Organisation',
    ticket_id String COMMENT 'Ticket id as the tracker names it',
    team LowCardinality(String) COMMENT 'Team owning the ticket',
    kind LowCardinality(String) COMMENT 'feature, bug, chore or incident',
    status LowCardinality(String) COMMENT 'opened, in_progress, closed or reopened',
    title_fingerprint Nullable(String) COMMENT 'Hash of the title; the title is never stored',
    estimate_hours Nullable(Float64) COMMENT 'Human-hours estimate',
    url Nullable(String) COMMENT 'Link to the ticket'
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, ticket_id, occurred_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000
COMMENT 'Ticket status changes (tally.tickets.v1): what was done.';

CREATE TABLE IF NOT EXISTS spend_windows
(
    window_start DateTime64(6, 'UTC') COMMENT 'Inclusive start of the window',
    window_seconds Int64 COMMENT 'Length of the window, seconds',
    revision Int32 COMMENT 'Emission number; the highest one is the window''s final figure',
    tenant LowCardinality(String) COMMENT 'Tenant of the key',
    team LowCardinality(String) COMMENT 'Team of the key',
    dimension LowCardinality(String) COMMENT 'model, user or workflow',
    dimension_value String COMMENT 'The model, user or workflow; empty when calls did not say',
    calls Int64 COMMENT 'Calls',
    unpriced_calls Int64 COMMENT 'Calls of unknown models (not in cost_nanos)',
    input_tokens Int64 COMMENT 'Input tokens, including cached',
    output_tokens Int64 COMMENT 'Output tokens, including reasoning',
    cache_read_tokens Int64 COMMENT 'Cache-read tokens',
    cache_write_tokens Int64 COMMENT 'Cache-write tokens',
    reasoning_tokens Int64 COMMENT 'Reasoning tokens',
    cost_nanos Int64 COMMENT 'Cost of priced calls, nano-dollars',
    energy_uwh_central Int64 COMMENT 'Energy, central, micro-watt-hours',
    co2e_ug_low Int64 COMMENT 'CO2e, low, micrograms',
    co2e_ug_central Int64 COMMENT 'CO2e, central, micrograms',
    co2e_ug_high Int64 COMMENT 'CO2e, high, micrograms',
    emitted_at DateTime64(6, 'UTC') COMMENT 'When the processor emitted this revision'
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(window_start)
ORDER BY (tenant, team, window_seconds, window_start, dimension, dimension_value)
SETTINGS non_replicated_deduplication_window = 10000
COMMENT 'Event-time spend windows (tally.spend_windows.v1); FINAL keeps each window''s highest revision.';

CREATE TABLE IF NOT EXISTS loop_signals
(
    signal_id String COMMENT 'Stable id of the signal across its life',
    signal_type LowCardinality(String) COMMENT 'retry_storm, repeated_tool_call, cycle, context_growth, idle_burn, usage_spike',
    state LowCardinality(String) COMMENT 'open, update or resolved',
    severity LowCardinality(String) COMMENT 'info, warning or critical',
    tenant LowCardinality(String) COMMENT 'Tenant',
    team LowCardinality(String) COMMENT 'Team',
    session_id Nullable(String) COMMENT 'Session the signal is about',
    agent LowCardinality(Nullable(String)) COMMENT 'Agent',
    workflow LowCardinality(Nullable(String)) COMMENT 'Workflow',
    user Nullable(String) COMMENT 'User',
    first_event_at DateTime64(6, 'UTC') COMMENT 'First call of the loop',
    last_event_at DateTime64(6, 'UTC') COMMENT 'Latest call of the loop',
    evidence_event_ids Array(String) COMMENT 'Evidence: event ids, capped',
    evidence_calls Int64 COMMENT 'Calls in the loop so far',
    tokens_burned Int64 COMMENT 'Tokens since the loop began',
    cost_nanos_burned Int64 COMMENT 'Cost since the loop began, nano-dollars',
    unpriced_calls Int64 COMMENT 'Loop calls of unknown models',
    co2e_ug_burned Int64 COMMENT 'CO2e since the loop began, micrograms',
    explanation String COMMENT 'One line for a person',
    emitted_at DateTime64(6, 'UTC') COMMENT 'When the detector emitted it'
)
ENGINE = ReplacingMergeTree(emitted_at)
PARTITION BY toYYYYMM(first_event_at)
ORDER BY (tenant, team, signal_id, state, last_event_at)
SETTINGS non_replicated_deduplication_window = 10000
COMMENT 'Runaway-agent signals (tally.loop_signals.v1).';

CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String COMMENT 'Stable id of the alert',
    kind LowCardinality(String) COMMENT 'budget_threshold, budget_burn_rate, usage_review or loop_signal',
    state LowCardinality(String) COMMENT 'firing or resolved',
    severity LowCardinality(String) COMMENT 'info, warning or critical',
    tenant LowCardinality(String) COMMENT 'Tenant',
    team LowCardinality(Nullable(String)) COMMENT 'Team, if any',
    subject String COMMENT 'What the alert is about',
    title String COMMENT 'Headline',
    message String COMMENT 'Explanation with the figures',
    source_id Nullable(String) COMMENT 'Record that raised it',
    amount_nanos Nullable(Int64) COMMENT 'Money the alert is about, nano-dollars',
    limit_nanos Nullable(Int64) COMMENT 'Budget it is measured against, nano-dollars',
    labels Map(String, String) COMMENT 'Routing labels',
    occurred_at DateTime64(6, 'UTC') COMMENT 'When the condition was met (or ended)',
    emitted_at DateTime64(6, 'UTC') COMMENT 'When tally emitted it'
)
ENGINE = ReplacingMergeTree(emitted_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant, alert_id, state)
SETTINGS non_replicated_deduplication_window = 10000
COMMENT 'Alerts (tally.alerts.v1): budgets, usage reviews, runaway agents.';
