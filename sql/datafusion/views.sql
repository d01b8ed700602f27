-- The views of 0003_views.sql for `tally up`'s embedded store, in DataFusion's dialect, over
-- the tables of `tally query` (which read as ClickHouse's FINAL does). Same names, same
-- columns, same figures: a test compares the reports built on both. Keep them in step.
-- `scale9(n)` is n x 10^-9 as an exact DECIMAL(38, 9); `intdiv(n, d)` ClickHouse's intDiv; `utc('YYYY-MM-DD')` a UTC midnight. Sums are over DECIMAL(38, 0): a BIGINT sum wraps.

CREATE VIEW emissions_monthly AS
SELECT
    CAST(date_trunc('month', occurred_at) AS DATE) AS month,
    tenant,
    team,
    canonical_model AS model,
    provider,
    coalesce(region, '') AS region,
    count(*) AS calls,
    sum(CAST(input_tokens + output_tokens AS DECIMAL(38, 0))) AS tokens,
    scale9(sum(CAST(energy_uwh_low AS DECIMAL(38, 0)))) AS energy_kwh_low,
    scale9(sum(CAST(energy_uwh_central AS DECIMAL(38, 0)))) AS energy_kwh_central,
    scale9(sum(CAST(energy_uwh_high AS DECIMAL(38, 0)))) AS energy_kwh_high,
    scale9(sum(CAST(co2e_ug_low AS DECIMAL(38, 0)))) AS co2e_kg_low,
    scale9(sum(CAST(co2e_ug_central AS DECIMAL(38, 0)))) AS co2e_kg_central,
    scale9(sum(CAST(co2e_ug_high AS DECIMAL(38, 0)))) AS co2e_kg_high,
    array_sort(array_agg(DISTINCT carbon_method_version)) AS carbon_method_versions,
    array_sort(array_agg(DISTINCT grid_dataset_version)) AS grid_dataset_versions,
    array_sort(array_agg(DISTINCT grid_source)) AS grid_sources
FROM llm_calls
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE VIEW cost_per_deploy AS
WITH deploys_in_order AS (
    SELECT
        tenant, team, service, environment, event_id, version, ticket_ids,
        occurred_at AS deployed_at,
        coalesce(lag(occurred_at, 1) OVER (PARTITION BY tenant, service, environment ORDER BY occurred_at),
                 utc('1970-01-01')) AS previous_deploy_at
    FROM deploys
    WHERE status = 'succeeded'
),
sums AS (
    SELECT
        d.tenant AS tenant, d.team AS team, d.service AS service, d.environment AS environment,
        d.event_id AS deploy_id, d.version AS version,
        d.previous_deploy_at AS previous_deploy_at, d.deployed_at AS deployed_at,
        sum(CASE WHEN c.occurred_at > d.previous_deploy_at AND c.occurred_at <= d.deployed_at THEN 1 ELSE 0 END) AS team_calls,
        sum(CASE WHEN c.occurred_at > d.previous_deploy_at AND c.occurred_at <= d.deployed_at
                 THEN CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0)) ELSE 0 END) AS team_cost_nanos,
        sum(CASE WHEN c.unpriced AND c.occurred_at > d.previous_deploy_at AND c.occurred_at <= d.deployed_at
                 THEN 1 ELSE 0 END) AS team_unpriced_calls,
        sum(CASE WHEN c.occurred_at <= d.deployed_at AND array_has(d.ticket_ids, coalesce(c.ticket_id, ''))
                 THEN CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0)) ELSE 0 END) AS ticket_cost_nanos
    FROM deploys_in_order AS d
    LEFT JOIN llm_calls AS c ON c.tenant = d.tenant AND c.team = d.team
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
)
SELECT *, scale9(team_cost_nanos) AS team_cost_usd, scale9(ticket_cost_nanos) AS ticket_cost_usd
FROM sums;

CREATE VIEW team_efficiency AS
WITH
    spend AS (
        SELECT tenant, team, CAST(date_trunc('month', occurred_at) AS DATE) AS month,
               sum(CAST(input_tokens + output_tokens AS DECIMAL(38, 0))) AS tokens,
               sum(CAST(coalesce(cost_total_nanos, 0) AS DECIMAL(38, 0))) AS cost_nanos,
               sum(CASE WHEN unpriced THEN 1 ELSE 0 END) AS unpriced_calls
        FROM llm_calls GROUP BY 1, 2, 3
    ),
    shipped AS (
        SELECT tenant, team, CAST(date_trunc('month', occurred_at) AS DATE) AS month, count(*) AS deploys
        FROM deploys WHERE status = 'succeeded' GROUP BY 1, 2, 3
    ),
    closed AS (
        SELECT tenant, team, CAST(date_trunc('month', occurred_at) AS DATE) AS month,
               sum(CASE WHEN kind = 'feature' THEN 1 ELSE 0 END) AS features,
               sum(CASE WHEN kind = 'bug' THEN 1 ELSE 0 END) AS bugs,
               sum(CASE WHEN kind = 'chore' THEN 1 ELSE 0 END) AS chores,
               sum(CASE WHEN kind = 'incident' THEN 1 ELSE 0 END) AS incidents
        FROM tickets WHERE status = 'closed' GROUP BY 1, 2, 3
    )
SELECT
    s.tenant AS tenant, s.team AS team, s.month AS month,
    s.tokens AS tokens, s.cost_nanos AS cost_nanos, scale9(s.cost_nanos) AS cost_usd,
    s.unpriced_calls AS unpriced_calls,
    coalesce(d.deploys, 0) AS deploys,
    coalesce(c.features, 0) AS closed_features, coalesce(c.bugs, 0) AS closed_bugs,
    coalesce(c.chores, 0) AS closed_chores, coalesce(c.incidents, 0) AS closed_incidents,
    -- ClickHouse's Decimal division truncates; so does intdiv.
    CASE WHEN coalesce(c.features, 0) = 0 THEN NULL ELSE scale9(intdiv(s.cost_nanos, c.features)) END AS cost_per_feature_usd,
    CASE WHEN coalesce(d.deploys, 0) = 0 THEN NULL ELSE scale9(intdiv(s.cost_nanos, d.deploys)) END AS cost_per_deploy_usd
FROM spend AS s
LEFT JOIN shipped AS d ON d.tenant = s.tenant AND d.team = s.team AND d.month = s.month
LEFT JOIN closed AS c ON c.tenant = s.tenant AND c.team = s.team AND c.month = s.month;

CREATE VIEW spend_window_totals AS
SELECT
    tenant, team, window_seconds, window_start, dimension, dimension_value,
    count(*) AS parts,
    sum(calls) AS calls,
    sum(unpriced_calls) AS unpriced_calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(cost_nanos) AS cost_nanos,
    sum(energy_uwh_central) AS energy_uwh_central,
    sum(co2e_ug_low) AS co2e_ug_low,
    sum(co2e_ug_central) AS co2e_ug_central,
    sum(co2e_ug_high) AS co2e_ug_high,
    max(emitted_at) AS last_emitted_at
FROM spend_windows
GROUP BY 1, 2, 3, 4, 5, 6;
