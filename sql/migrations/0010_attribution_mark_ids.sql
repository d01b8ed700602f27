-- cost_per_deploy and cost_per_ticket as in 0009 (exact prefix sums, the same figures), with
-- less work per call. At 10,000 deploys x 10 million calls 0009's views took 2.6 to 3.6 s on
-- two cores, nearly all of it putting each call in its bucket: two ASOF JOINs per call and a
-- GROUP BY on (tenant, team, scope, ticket, instant), strings and a DateTime64 hashed per call.
-- Now:
--
-- - each mark (an instant a team's scope is read at) has a number, dense_rank over its whole
--   key, so a call's bucket is grouped by one integer and the key is joined back once per mark;
-- - cost_per_deploy's two scopes are two passes: every call to its team's marks, and only the
--   calls tagged with a ticket to the ticket marks (a call with no ticket only when a deploy
--   lists '', as 0009 had it), instead of every call through both joins.
--
-- Readings, prefix sums and figures are 0009's (see its header and sql/README.md).

CREATE OR REPLACE VIEW cost_per_deploy
AS WITH
    deploys_in_order AS
    (
        SELECT
            tenant, team, service, environment, event_id, version, ticket_ids,
            occurred_at AS deployed_at,
            lagInFrame(occurred_at, 1, toDateTime64(0, 6, 'UTC'))
                OVER (PARTITION BY tenant, service, environment ORDER BY occurred_at ASC, team ASC, event_id ASC
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS previous_deploy_at
        FROM deploys FINAL
        WHERE status = 'succeeded'
    ),
    -- scope 0: the team's calls up to `at`; scope 1: the team's calls tagged `ticket` up to `at`
    -- (a call with no ticket_id has the ticket '', as has(ticket_ids, ifNull(ticket_id, '')) had it)
    readings AS
    (
        SELECT
            tenant, team, service, environment, event_id, version, previous_deploy_at, deployed_at,
            reading.1 AS scope, reading.2 AS ticket, reading.3 AS at, reading.4 AS sign
        FROM deploys_in_order
        ARRAY JOIN arrayConcat(
            [(0, '', deployed_at, 1), (0, '', previous_deploy_at, -1)],
            arrayMap(id -> (1, id, deployed_at, 1), arrayDistinct(ticket_ids))) AS reading
    ),
    -- each instant a scope of a team is read at, numbered (the same numbers however often
    -- this is evaluated: dense_rank over the whole key)
    marks AS
    (
        SELECT tenant, team, scope, ticket, at, dense_rank() OVER (ORDER BY tenant, team, scope, ticket, at) AS mark
        FROM (SELECT DISTINCT tenant, team, scope, ticket, at FROM readings)
    ),
    -- every call in the bucket of its team's first mark at or after it; the calls tagged with a
    -- ticket a deploy lists (only those: a call with no ticket only when a deploy lists '') in
    -- that of their ticket's
    buckets AS
    (
        SELECT m.mark AS mark, count() AS bucket_calls, sum(c.cost_nanos) AS bucket_cost_nanos,
               countIf(c.unpriced) AS bucket_unpriced_calls
        FROM
        (
            SELECT tenant, team, occurred_at, toInt128(ifNull(cost_total_nanos, 0)) AS cost_nanos, unpriced
            FROM llm_calls FINAL
        ) AS c
        ASOF INNER JOIN (SELECT tenant, team, at, mark FROM marks WHERE scope = 0) AS m
            ON c.tenant = m.tenant AND c.team = m.team AND c.occurred_at <= m.at
        GROUP BY mark
        UNION ALL
        SELECT m.mark AS mark, count() AS bucket_calls, sum(c.cost_nanos) AS bucket_cost_nanos,
               countIf(c.unpriced) AS bucket_unpriced_calls
        FROM
        (
            SELECT tenant, team, occurred_at, ifNull(ticket_id, '') AS ticket,
                   toInt128(ifNull(cost_total_nanos, 0)) AS cost_nanos, unpriced
            FROM llm_calls FINAL
            WHERE ifNull(ticket_id, '') != '' OR (SELECT count() > 0 FROM readings WHERE scope = 1 AND ticket = '')
        ) AS c
        ASOF INNER JOIN (SELECT tenant, team, ticket, at, mark FROM marks WHERE scope = 1) AS m
            ON c.tenant = m.tenant AND c.team = m.team AND c.ticket = m.ticket AND c.occurred_at <= m.at
        GROUP BY mark
    ),
    prefix_sums AS
    (
        SELECT
            m.tenant AS tenant, m.team AS team, m.scope AS sum_scope, m.ticket AS sum_ticket, m.at AS sum_at,
            sum(b.bucket_calls) OVER upto AS upto_calls,
            sum(b.bucket_cost_nanos) OVER upto AS upto_cost_nanos,
            sum(b.bucket_unpriced_calls) OVER upto AS upto_unpriced_calls
        FROM buckets AS b
        INNER JOIN marks AS m ON m.mark = b.mark
        WINDOW upto AS (PARTITION BY tenant, team, sum_scope, sum_ticket ORDER BY sum_at ASC
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    )
SELECT
    r.tenant AS tenant,
    r.team AS team,
    r.service AS service,
    r.environment AS environment,
    r.event_id AS deploy_id,
    r.version AS version,
    r.previous_deploy_at AS previous_deploy_at,
    r.deployed_at AS deployed_at,
    toUInt64(sumIf(r.sign * p.upto_calls, r.scope = 0)) AS team_calls,
    sumIf(r.sign * p.upto_cost_nanos, r.scope = 0) AS team_cost_nanos,
    toUInt64(sumIf(r.sign * p.upto_unpriced_calls, r.scope = 0)) AS team_unpriced_calls,
    sumIf(p.upto_cost_nanos, r.scope = 1) AS ticket_cost_nanos,
    toDecimal128(team_cost_nanos, 9) / 1000000000 AS team_cost_usd,
    toDecimal128(ticket_cost_nanos, 9) / 1000000000 AS ticket_cost_usd
FROM readings AS r
ASOF LEFT JOIN prefix_sums AS p
    ON p.tenant = r.tenant AND p.team = r.team AND p.sum_scope = r.scope AND p.sum_ticket = r.ticket AND p.sum_at <= r.at
GROUP BY tenant, team, service, environment, deploy_id, version, previous_deploy_at, deployed_at
SETTINGS join_use_nulls = 0
COMMENT 'For each successful deploy: the team''s spend since the previous successful deploy of the same service and environment, and the spend of calls tagged with the deploy''s tickets (exact prefix sums, see sql/README.md)';

CREATE OR REPLACE VIEW cost_per_ticket
AS WITH
    tickets_closed AS
    (
        SELECT
            tenant, ticket_id,
            argMax(team, (occurred_at, event_id)) AS team,
            argMax(kind, (occurred_at, event_id)) AS kind,
            minIf(occurred_at, status IN ('opened', 'in_progress')) AS opened_at,
            maxIf(occurred_at, status = 'closed') AS closed_at,
            argMax(estimate_hours, (occurred_at, event_id)) AS estimate_hours
        FROM tickets FINAL
        GROUP BY tenant, ticket_id
        HAVING countIf(status = 'closed') > 0
    ),
    -- scope 0: the team's untagged calls up to `at`: + at closed_at, - just before opened_at
    -- (timestamps are whole microseconds), nothing when it closed before it opened. Scope 1:
    -- the team's calls tagged with the ticket, at any time
    readings AS
    (
        SELECT
            tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours,
            reading.1 AS scope, if(reading.1 = 1, ticket_id, '') AS ticket, reading.2 AS at, reading.3 AS sign
        FROM tickets_closed
        ARRAY JOIN arrayConcat(
            [(1, toDateTime64('2299-12-31 23:59:59.999999', 6, 'UTC'), 1)],
            if(opened_at <= closed_at,
               [(0, closed_at, 1), (0, opened_at - toIntervalMicrosecond(1), -1)],
               [])) AS reading
    ),
    -- each instant a scope of a team is read at, numbered (the same numbers however often
    -- this is evaluated: dense_rank over the whole key)
    marks AS
    (
        SELECT tenant, team, scope, ticket, at, dense_rank() OVER (ORDER BY tenant, team, scope, ticket, at) AS mark
        FROM (SELECT DISTINCT tenant, team, scope, ticket, at FROM readings)
    ),
    buckets AS
    (
        SELECT m.mark AS mark, sum(c.cost_nanos) AS bucket_cost_nanos
        FROM
        (
            SELECT tenant, team, if(ticket_id IS NULL, 0, 1) AS scope, ifNull(ticket_id, '') AS ticket, occurred_at,
                   toInt128(ifNull(cost_total_nanos, 0)) AS cost_nanos
            FROM llm_calls FINAL
        ) AS c
        ASOF INNER JOIN marks AS m
            ON c.tenant = m.tenant AND c.team = m.team AND c.scope = m.scope AND c.ticket = m.ticket
               AND c.occurred_at <= m.at
        GROUP BY mark
    ),
    prefix_sums AS
    (
        SELECT
            m.tenant AS tenant, m.team AS team, m.scope AS mark_scope, m.ticket AS mark_ticket, m.at AS mark_at,
            sum(b.bucket_cost_nanos) OVER (PARTITION BY tenant, team, mark_scope, mark_ticket ORDER BY mark_at ASC
                                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto_cost_nanos
        FROM buckets AS b
        INNER JOIN marks AS m ON m.mark = b.mark
    )
SELECT
    r.tenant AS tenant,
    r.team AS team,
    r.ticket_id AS ticket_id,
    r.kind AS kind,
    r.opened_at AS opened_at,
    r.closed_at AS closed_at,
    r.estimate_hours AS estimate_hours,
    sumIf(p.upto_cost_nanos, r.scope = 1) AS tagged_cost_nanos,
    sumIf(r.sign * p.upto_cost_nanos, r.scope = 0) AS unattributed_team_cost_nanos,
    tagged_cost_nanos + intDiv(unattributed_team_cost_nanos * toInt128(toDecimal128({unattributed_share:Decimal64(9)}, 9) * 1000000000), 1000000000) AS attributed_cost_nanos,
    toDecimal128(attributed_cost_nanos, 9) / 1000000000 AS attributed_cost_usd,
    if(isNull(r.estimate_hours), NULL, r.estimate_hours * {loaded_hourly_rate_usd:Float64}) AS human_cost_usd
FROM readings AS r
ASOF LEFT JOIN prefix_sums AS p
    ON p.tenant = r.tenant AND p.team = r.team AND p.mark_scope = r.scope AND p.mark_ticket = r.ticket AND p.mark_at <= r.at
GROUP BY tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours
SETTINGS join_use_nulls = 0
COMMENT 'For each closed ticket: spend of calls tagged with it, plus unattributed_share (a Decimal64(9), exact) of the team''s untagged spend while it was open; its estimate in hours x loaded_hourly_rate_usd next to it. Parameters: SELECT * FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 120)';
