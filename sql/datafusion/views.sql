-- The views of 0003_views.sql for `tally up`'s embedded store, in DataFusion's dialect, over
-- the tables of `tally query` (which read as ClickHouse's FINAL does). Same names, same
-- columns, same figures: a test compares the reports built on both. Keep them in step.
-- `scale9(n)` is n x 10^-9 as an exact DECIMAL(38, 9); `intdiv(n, d)` ClickHouse's intDiv; `utc('YYYY-MM-DD')` a UTC midnight. Sums are over DECIMAL(38, 0): a BIGINT sum wraps.
-- Hours and days of a call are taken with date_bin (arithmetic on the UTC timestamp); date_trunc,
-- which converts each value through the time zone, only over grouped rows.

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

-- cost_per_deploy as 0009/0010_attribution_*.sql compute it, exact prefix sums, without the
-- ASOF JOIN ClickHouse has (DataFusion has none): each deploy's readings (its team's calls up
-- to deployed_at, +, and up to previous_deploy_at, -; each distinct id of its ticket_ids: the
-- team's calls tagged with it up to deployed_at, NULL as '') are marks. Each call goes to the
-- bucket of the first mark at or after it: for the team's timeline through the marks'
-- intervals cut at the whole hours in which the team has calls (an equi-join on tenant, team and hour, then the interval's
-- bounds), for a ticket's through its few marks. A running sum over the buckets in time order
-- is, at each mark, the exact sum of every call at or before it. One pass over llm_calls per
-- timeline and no sort of the calls: about calls x (marks an hour + 1) + deploys x log.
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
-- each instant a scope of a team is read at (a mark), numbered, with the mark before it on
-- the same timeline: a call belongs to the first mark at or after it, the interval (after, at]
marks AS (
    SELECT tenant, team, scope, ticket, at,
           lag(at, 1) OVER (PARTITION BY tenant, team, scope, ticket ORDER BY at) AS after,
           row_number() OVER (ORDER BY tenant, team, scope, ticket, at) AS mark
    FROM (SELECT DISTINCT tenant, team, scope, ticket, at FROM readings)
),
-- the hours in which a team has calls, and the marks' intervals cut at them: each call finds
-- its interval by an equi-join on (tenant, team, hour) among a few candidates. Only hours
-- with calls are cut, so a stretch without any (a call stamped at the epoch, a team quiet for
-- a year) costs nothing.
call_hours AS (
    SELECT DISTINCT tenant, team, date_bin(INTERVAL '1 hour', occurred_at) AS hour FROM llm_calls
),
pieces AS (
    SELECT m.tenant AS tenant, m.team AS team, m.mark AS mark, m.after AS after, m.at AS at, h.hour AS hour
    FROM marks AS m
    JOIN call_hours AS h ON h.tenant = m.tenant AND h.team = m.team
    WHERE m.scope = 0 AND h.hour <= m.at AND (m.after IS NULL OR h.hour + INTERVAL '1 hour' > m.after)
),
buckets AS (
    SELECT p.mark AS mark, count(*) AS calls,
           sum(CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0))) AS cost_nanos,
           sum(CASE WHEN c.unpriced THEN 1 ELSE 0 END) AS unpriced
    FROM llm_calls AS c
    JOIN pieces AS p ON p.tenant = c.tenant AND p.team = c.team AND p.hour = date_bin(INTERVAL '1 hour', c.occurred_at)
    WHERE c.occurred_at <= p.at AND (p.after IS NULL OR c.occurred_at > p.after)
    GROUP BY p.mark
    UNION ALL
    -- a ticket's marks are few: its calls are joined to all of them; the calls with no
    -- ticket (NULL or '') only to the marks of '' (none unless a deploy lists ''), a join
    -- apart so that they are not looked up one by one. Each mark is in one branch only: the
    -- window below reads one bucket a mark.
    SELECT m.mark AS mark, count(*) AS calls,
           sum(CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0))) AS cost_nanos,
           sum(CASE WHEN c.unpriced THEN 1 ELSE 0 END) AS unpriced
    FROM (SELECT * FROM llm_calls WHERE ticket_id IS NOT NULL AND ticket_id != '') AS c
    JOIN (SELECT * FROM marks WHERE scope = 1 AND ticket != '') AS m
        ON m.tenant = c.tenant AND m.team = c.team AND m.ticket = c.ticket_id
    WHERE c.occurred_at <= m.at AND (m.after IS NULL OR c.occurred_at > m.after)
    GROUP BY m.mark
    UNION ALL
    SELECT m.mark AS mark, count(*) AS calls,
           sum(CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0))) AS cost_nanos,
           sum(CASE WHEN c.unpriced THEN 1 ELSE 0 END) AS unpriced
    FROM (SELECT * FROM marks WHERE scope = 1 AND ticket = '') AS m
    JOIN (SELECT * FROM llm_calls WHERE coalesce(ticket_id, '') = '') AS c
        ON m.tenant = c.tenant AND m.team = c.team
    WHERE c.occurred_at <= m.at AND (m.after IS NULL OR c.occurred_at > m.after)
    GROUP BY m.mark
),
prefix_sums AS (
    SELECT m.tenant AS tenant, m.team AS team, m.scope AS scope, m.ticket AS ticket, m.at AS at,
           sum(coalesce(b.calls, 0)) OVER upto AS upto_calls,
           sum(coalesce(b.cost_nanos, CAST(0 AS DECIMAL(38, 0)))) OVER upto AS upto_cost_nanos,
           sum(coalesce(b.unpriced, 0)) OVER upto AS upto_unpriced_calls
    FROM marks AS m
    LEFT JOIN buckets AS b ON b.mark = m.mark
    WINDOW upto AS (PARTITION BY m.tenant, m.team, m.scope, m.ticket ORDER BY m.at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
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
        ON p.tenant = r.tenant AND p.team = r.team AND p.scope = r.scope AND p.ticket = r.ticket AND p.at = r.at
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
)
SELECT *, scale9(team_cost_nanos) AS team_cost_usd, scale9(ticket_cost_nanos) AS ticket_cost_usd
FROM sums;

CREATE VIEW team_efficiency AS
WITH
    -- by UTC day first (date_bin, arithmetic on the timestamp), then by month over the days:
    -- date_trunc of a timestamp with a time zone converts each value, a third of the view's
    -- time when taken per call at 10 million calls
    spend AS (
        SELECT tenant, team, CAST(date_trunc('month', day) AS DATE) AS month,
               sum(tokens) AS tokens, sum(cost_nanos) AS cost_nanos, sum(unpriced_calls) AS unpriced_calls
        FROM (
            SELECT tenant, team, date_bin(INTERVAL '1 day', occurred_at) AS day,
                   sum(CAST(input_tokens + output_tokens AS DECIMAL(38, 0))) AS tokens,
                   sum(CAST(coalesce(cost_total_nanos, 0) AS DECIMAL(38, 0))) AS cost_nanos,
                   sum(CASE WHEN unpriced THEN 1 ELSE 0 END) AS unpriced_calls
            FROM llm_calls GROUP BY 1, 2, 3
        ) AS days
        GROUP BY 1, 2, 3
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
