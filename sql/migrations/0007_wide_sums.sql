-- Sums that cannot wrap. A sum of Int64 is an Int64 in ClickHouse, and wraps: at 1,000 times
-- the seed's volume (60 quadrillion tokens a month in one tenant) a month of one team passes
-- 9.2 billion dollars in nano-dollars, 9.2 TWh in micro-watt-hours and 9.2 Mt in micrograms.
-- Every sum below is over Int128 (toInt128, exact to 1.7e38); the windows' sums and the
-- alerts' amounts are Int128 columns (SpendWindow and Alert version 2), and so are the
-- rollups' columns, summed over Int128 by their materialized views. Per-call columns stay
-- Int64: ingest refuses a call above 1,000,000,000 tokens in any token field.

ALTER TABLE spend_windows
    MODIFY COLUMN input_tokens Int128,
    MODIFY COLUMN output_tokens Int128,
    MODIFY COLUMN cache_read_tokens Int128,
    MODIFY COLUMN cache_write_tokens Int128,
    MODIFY COLUMN reasoning_tokens Int128,
    MODIFY COLUMN cost_nanos Int128,
    MODIFY COLUMN energy_uwh_central Int128,
    MODIFY COLUMN co2e_ug_low Int128,
    MODIFY COLUMN co2e_ug_central Int128,
    MODIFY COLUMN co2e_ug_high Int128;

ALTER TABLE alerts
    MODIFY COLUMN amount_nanos Nullable(Int128),
    MODIFY COLUMN limit_nanos Nullable(Int128);

ALTER TABLE llm_calls_daily
    MODIFY COLUMN input_tokens Int128,
    MODIFY COLUMN output_tokens Int128,
    MODIFY COLUMN cache_read_tokens Int128,
    MODIFY COLUMN cache_write_tokens Int128,
    MODIFY COLUMN reasoning_tokens Int128,
    MODIFY COLUMN cost_nanos Int128,
    MODIFY COLUMN energy_uwh_central Int128,
    MODIFY COLUMN co2e_ug_low Int128,
    MODIFY COLUMN co2e_ug_central Int128,
    MODIFY COLUMN co2e_ug_high Int128;

ALTER TABLE llm_calls_hourly
    MODIFY COLUMN tokens Int128,
    MODIFY COLUMN cost_nanos Int128,
    MODIFY COLUMN co2e_ug_central Int128;

-- The rollups' views again, summing over Int128 (rows inserted while they are replaced are
-- not in the rollups; the rollups are for dashboards, see 0004).
DROP VIEW IF EXISTS llm_calls_daily_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_daily_mv TO llm_calls_daily
AS SELECT
    toDate(occurred_at) AS day, tenant, team, model, ifNull(region, '') AS region,
    count() AS calls, countIf(unpriced) AS unpriced_calls,
    sum(toInt128(input_tokens)) AS input_tokens, sum(toInt128(output_tokens)) AS output_tokens,
    sum(toInt128(cache_read_tokens)) AS cache_read_tokens, sum(toInt128(cache_write_tokens)) AS cache_write_tokens,
    sum(toInt128(reasoning_tokens)) AS reasoning_tokens, sum(toInt128(ifNull(cost_total_nanos, 0))) AS cost_nanos,
    sum(toInt128(energy_uwh_central)) AS energy_uwh_central, sum(toInt128(co2e_ug_low)) AS co2e_ug_low,
    sum(toInt128(co2e_ug_central)) AS co2e_ug_central, sum(toInt128(co2e_ug_high)) AS co2e_ug_high
FROM llm_calls
GROUP BY day, tenant, team, model, region;

DROP VIEW IF EXISTS llm_calls_hourly_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS llm_calls_hourly_mv TO llm_calls_hourly
AS SELECT
    toStartOfHour(occurred_at) AS hour, tenant, team,
    count() AS calls, countIf(unpriced) AS unpriced_calls,
    sum(toInt128(input_tokens) + output_tokens) AS tokens, sum(toInt128(ifNull(cost_total_nanos, 0))) AS cost_nanos,
    sum(toInt128(co2e_ug_central)) AS co2e_ug_central
FROM llm_calls
GROUP BY hour, tenant, team;

CREATE OR REPLACE VIEW emissions_monthly
AS SELECT
    toStartOfMonth(occurred_at) AS month,
    tenant,
    team,
    canonical_model AS model,
    provider,
    ifNull(region, '') AS region,
    count() AS calls,
    sum(toInt128(input_tokens) + output_tokens) AS tokens,
    toDecimal128(sum(toInt128(energy_uwh_low)), 9) / 1000000000 AS energy_kwh_low,
    toDecimal128(sum(toInt128(energy_uwh_central)), 9) / 1000000000 AS energy_kwh_central,
    toDecimal128(sum(toInt128(energy_uwh_high)), 9) / 1000000000 AS energy_kwh_high,
    toDecimal128(sum(toInt128(co2e_ug_low)), 9) / 1000000000 AS co2e_kg_low,
    toDecimal128(sum(toInt128(co2e_ug_central)), 9) / 1000000000 AS co2e_kg_central,
    toDecimal128(sum(toInt128(co2e_ug_high)), 9) / 1000000000 AS co2e_kg_high,
    arraySort(groupUniqArray(carbon_method_version)) AS carbon_method_versions,
    arraySort(groupUniqArray(grid_dataset_version)) AS grid_dataset_versions,
    arraySort(groupUniqArray(grid_source)) AS grid_sources
FROM llm_calls FINAL
GROUP BY month, tenant, team, model, provider, region
COMMENT 'Energy (kWh) and CO2e (kg), low / central / high, per month x team x model (canonical) x provider x region, with the method and dataset versions behind them';

CREATE OR REPLACE VIEW cost_per_deploy
AS WITH deploys_in_order AS
(
    SELECT
        tenant, team, service, environment, event_id, version, ticket_ids,
        occurred_at AS deployed_at,
        lagInFrame(occurred_at, 1, toDateTime64(0, 6, 'UTC'))
            OVER (PARTITION BY tenant, service, environment ORDER BY occurred_at ASC
                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS previous_deploy_at
    FROM deploys FINAL
    WHERE status = 'succeeded'
)
SELECT
    d.tenant AS tenant,
    d.team AS team,
    d.service AS service,
    d.environment AS environment,
    d.event_id AS deploy_id,
    d.version AS version,
    d.previous_deploy_at AS previous_deploy_at,
    d.deployed_at AS deployed_at,
    countIf(c.occurred_at > d.previous_deploy_at AND c.occurred_at <= d.deployed_at) AS team_calls,
    sumIf(toInt128(ifNull(c.cost_total_nanos, 0)), c.occurred_at > d.previous_deploy_at AND c.occurred_at <= d.deployed_at) AS team_cost_nanos,
    countIf(c.unpriced AND c.occurred_at > d.previous_deploy_at AND c.occurred_at <= d.deployed_at) AS team_unpriced_calls,
    sumIf(toInt128(ifNull(c.cost_total_nanos, 0)), c.occurred_at <= d.deployed_at AND has(d.ticket_ids, ifNull(c.ticket_id, ''))) AS ticket_cost_nanos,
    toDecimal128(team_cost_nanos, 9) / 1000000000 AS team_cost_usd,
    toDecimal128(ticket_cost_nanos, 9) / 1000000000 AS ticket_cost_usd
FROM deploys_in_order AS d
LEFT JOIN
(
    SELECT tenant, team, occurred_at, cost_total_nanos, unpriced, ticket_id FROM llm_calls FINAL
) AS c ON c.tenant = d.tenant AND c.team = d.team
GROUP BY tenant, team, service, environment, deploy_id, version, previous_deploy_at, deployed_at
COMMENT 'For each successful deploy: the team''s spend since the previous successful deploy of the same service and environment, and the spend of calls tagged with the deploy''s tickets';

CREATE OR REPLACE VIEW cost_per_ticket
AS WITH tickets_closed AS
(
    SELECT
        tenant, ticket_id,
        argMax(team, occurred_at) AS team,
        argMax(kind, occurred_at) AS kind,
        minIf(occurred_at, status IN ('opened', 'in_progress')) AS opened_at,
        maxIf(occurred_at, status = 'closed') AS closed_at,
        argMax(estimate_hours, occurred_at) AS estimate_hours
    FROM tickets FINAL
    GROUP BY tenant, ticket_id
    HAVING countIf(status = 'closed') > 0
)
SELECT
    t.tenant AS tenant,
    t.team AS team,
    t.ticket_id AS ticket_id,
    t.kind AS kind,
    t.opened_at AS opened_at,
    t.closed_at AS closed_at,
    t.estimate_hours AS estimate_hours,
    sumIf(toInt128(ifNull(c.cost_total_nanos, 0)), c.ticket_id = t.ticket_id) AS tagged_cost_nanos,
    sumIf(toInt128(ifNull(c.cost_total_nanos, 0)), c.ticket_id IS NULL AND c.occurred_at >= t.opened_at AND c.occurred_at <= t.closed_at) AS unattributed_team_cost_nanos,
    tagged_cost_nanos + intDiv(unattributed_team_cost_nanos * toInt128(round({unattributed_share:Float64} * 1000000000)), 1000000000) AS attributed_cost_nanos,
    toDecimal128(attributed_cost_nanos, 9) / 1000000000 AS attributed_cost_usd,
    if(isNull(t.estimate_hours), NULL, t.estimate_hours * {loaded_hourly_rate_usd:Float64}) AS human_cost_usd
FROM tickets_closed AS t
LEFT JOIN
(
    SELECT tenant, team, occurred_at, cost_total_nanos, ticket_id FROM llm_calls FINAL
) AS c ON c.tenant = t.tenant AND c.team = t.team
GROUP BY tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours
COMMENT 'For each closed ticket: spend of calls tagged with it, plus unattributed_share (exact to a billionth) of the team''s untagged spend while it was open; its estimate in hours x loaded_hourly_rate_usd next to it. Parameters: SELECT * FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 120)';

CREATE OR REPLACE VIEW team_efficiency
AS WITH
    spend AS
    (
        SELECT tenant, team, toStartOfMonth(occurred_at) AS month,
               sum(toInt128(input_tokens) + output_tokens) AS tokens, sum(toInt128(ifNull(cost_total_nanos, 0))) AS cost_nanos, countIf(unpriced) AS unpriced_calls
        FROM llm_calls FINAL GROUP BY tenant, team, month
    ),
    shipped AS
    (
        SELECT tenant, team, toStartOfMonth(occurred_at) AS month, count() AS deploys
        FROM deploys FINAL WHERE status = 'succeeded' GROUP BY tenant, team, month
    ),
    closed AS
    (
        SELECT tenant, team, toStartOfMonth(occurred_at) AS month,
               countIf(kind = 'feature') AS features, countIf(kind = 'bug') AS bugs,
               countIf(kind = 'chore') AS chores, countIf(kind = 'incident') AS incidents
        FROM tickets FINAL WHERE status = 'closed' GROUP BY tenant, team, month
    )
SELECT
    s.tenant AS tenant, s.team AS team, s.month AS month,
    s.tokens AS tokens, s.cost_nanos AS cost_nanos, toDecimal128(s.cost_nanos, 9) / 1000000000 AS cost_usd,
    s.unpriced_calls AS unpriced_calls,
    ifNull(d.deploys, 0) AS deploys,
    ifNull(c.features, 0) AS closed_features, ifNull(c.bugs, 0) AS closed_bugs,
    ifNull(c.chores, 0) AS closed_chores, ifNull(c.incidents, 0) AS closed_incidents,
    if(closed_features = 0, NULL, toDecimal128(s.cost_nanos, 9) / 1000000000 / closed_features) AS cost_per_feature_usd,
    if(deploys = 0, NULL, toDecimal128(s.cost_nanos, 9) / 1000000000 / deploys) AS cost_per_deploy_usd
FROM spend AS s
LEFT JOIN shipped AS d ON d.tenant = s.tenant AND d.team = s.team AND d.month = s.month
LEFT JOIN closed AS c ON c.tenant = s.tenant AND c.team = s.team AND c.month = s.month
COMMENT 'Per team and month: tokens, cost, deploys, closed tickets by kind, cost per closed feature and per deploy (the data for output against spend)';
