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

-- cost_per_deploy as 0009_attribution_prefix_sums.sql computes it, with a window function
-- where ClickHouse has ASOF JOIN (DataFusion has none): each deploy's readings (its team's
-- calls up to deployed_at, +, and up to previous_deploy_at, -; each distinct id of its
-- ticket_ids: the team's calls tagged with it up to deployed_at) are marks on a timeline of
-- the calls; a running sum over each team's (team and ticket's) timeline in time order, a
-- mark after the calls of its own instant, gives at each mark the exact sum of every call at
-- or before it. A call counts on the ticket's timeline only when a deploy of its team lists
-- its ticket (NULL as ''). One pass over llm_calls; about (calls + deploys) x log.
CREATE VIEW cost_per_deploy AS
WITH deploys_in_order AS (
    -- CASE ... END: the de-duplicating view's columns are nullable when it runs (not when it is
    -- planned), and DataFusion refuses an aggregate whose input differs so; these say nullable.
    SELECT
        CASE WHEN tenant IS NOT NULL THEN tenant END AS tenant,
        CASE WHEN team IS NOT NULL THEN team END AS team,
        CASE WHEN service IS NOT NULL THEN service END AS service,
        CASE WHEN environment IS NOT NULL THEN environment END AS environment,
        CASE WHEN event_id IS NOT NULL THEN event_id END AS event_id,
        version, ticket_ids,
        CASE WHEN occurred_at IS NOT NULL THEN occurred_at END AS deployed_at,
        coalesce(lag(occurred_at, 1) OVER (PARTITION BY tenant, service, environment ORDER BY occurred_at, team, event_id),
                 utc('1970-01-01')) AS previous_deploy_at
    FROM deploys
    WHERE status = 'succeeded'
),
readings AS (
    SELECT tenant, team, service, environment, event_id, version, previous_deploy_at, deployed_at,
           0 AS scope, '' AS ticket, deployed_at AS at, 1 AS team_sign, 0 AS ticket_sign
    FROM deploys_in_order
    UNION ALL
    SELECT tenant, team, service, environment, event_id, version, previous_deploy_at, deployed_at,
           0 AS scope, '' AS ticket, previous_deploy_at AS at, -1 AS team_sign, 0 AS ticket_sign
    FROM deploys_in_order
    UNION ALL
    SELECT tenant, team, service, environment, event_id, version, previous_deploy_at, deployed_at,
           1 AS scope, ticket, deployed_at AS at, 0 AS team_sign, 1 AS ticket_sign
    FROM (SELECT *, unnest(array_distinct(ticket_ids)) AS ticket FROM deploys_in_order)
),
listed AS (
    SELECT DISTINCT tenant, team, ticket FROM readings WHERE scope = 1
),
calls AS (
    SELECT c.tenant AS tenant, c.team AS team, coalesce(c.ticket_id, '') AS ticket, c.occurred_at AS at,
           CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0)) AS cost_nanos,
           CASE WHEN c.unpriced THEN 1 ELSE 0 END AS unpriced,
           CASE WHEN l.ticket IS NULL THEN make_array(0) ELSE make_array(0, 1) END AS scopes
    FROM llm_calls AS c
    LEFT JOIN listed AS l ON l.tenant = c.tenant AND l.team = c.team AND l.ticket = coalesce(c.ticket_id, '')
),
timeline AS (
    SELECT tenant, team, scope, CASE WHEN scope = 0 THEN '' ELSE ticket END AS ticket, at, 0 AS is_mark,
           1 AS calls, cost_nanos, unpriced
    FROM (SELECT *, unnest(scopes) AS scope FROM calls)
    UNION ALL
    SELECT DISTINCT tenant, team, scope, ticket, at, 1 AS is_mark, 0 AS calls, CAST(0 AS DECIMAL(38, 0)) AS cost_nanos, 0 AS unpriced
    FROM readings
),
prefix_sums AS (
    SELECT tenant, team, scope, ticket, at, is_mark,
           sum(calls) OVER upto AS upto_calls,
           sum(cost_nanos) OVER upto AS upto_cost_nanos,
           sum(unpriced) OVER upto AS upto_unpriced_calls
    FROM timeline
    WINDOW upto AS (PARTITION BY tenant, team, scope, ticket ORDER BY at, is_mark ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
sums AS (
    SELECT
        r.tenant AS tenant, r.team AS team, r.service AS service, r.environment AS environment,
        r.event_id AS deploy_id, r.version AS version,
        r.previous_deploy_at AS previous_deploy_at, r.deployed_at AS deployed_at,
        sum(r.team_sign * p.upto_calls) AS team_calls,
        sum(CAST(r.team_sign AS DECIMAL(38, 0)) * p.upto_cost_nanos) AS team_cost_nanos,
        sum(r.team_sign * p.upto_unpriced_calls) AS team_unpriced_calls,
        sum(CAST(r.ticket_sign AS DECIMAL(38, 0)) * p.upto_cost_nanos) AS ticket_cost_nanos
    FROM readings AS r
    JOIN prefix_sums AS p
        ON p.is_mark = 1 AND p.tenant = r.tenant AND p.team = r.team AND p.scope = r.scope AND p.ticket = r.ticket AND p.at = r.at
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
