-- cost_per_deploy and cost_per_ticket without the deploys x calls join. Until now each deploy
-- (or ticket) was joined to every call of its team and the window was a condition inside
-- sumIf, so a query cost deploys x calls (10,000 deploys x 2 million calls had not answered
-- after 14 minutes). Now the sums are exact prefix sums, read where they are needed:
--
-- 1. readings: what each deploy (ticket) needs, as (scope, ticket, instant, sign) rows. A
--    deploy reads its team's calls up to deployed_at (+) and up to previous_deploy_at (-),
--    and for each distinct id of its ticket_ids the team's calls tagged with it up to
--    deployed_at. The instants a team's figures are read at are its marks.
-- 2. Each call is put, by an ASOF JOIN (closest mark at or after it), in the bucket of the
--    first mark at or after its time, and the buckets are summed (one pass over llm_calls FINAL).
-- 3. A running sum over each team's (team and ticket's) buckets in time order is the sum of
--    every call at or before that mark: exact Int128, a call at a mark's very instant counted
--    up to that mark.
-- 4. Each reading looks its prefix sum up (ASOF JOIN: the last bucket at or before its
--    instant; no bucket, no calls: 0), and a deploy's figures are the signed sum of its readings.
--
-- So the work is about (calls + deploys) x log(marks per team). The figures are those of
-- 0007's views, except where those were not determined: the previous deploy of deploys of one
-- service and environment at the same instant (now ordered by team, then event id), and a
-- ticket's team, kind and estimate when two of its events share the latest instant (now the
-- one with the greatest event id). The share of cost_per_ticket is a Decimal64(9) parameter
-- (it was a Float64 rounded to billionths): 0.1 is exactly 100,000,000 billionths, and digits
-- past the ninth decimal are dropped, as ClickHouse reads any Decimal64(9).

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
    -- every call in the bucket of its team's first mark at or after it, and in that of its
    -- ticket's; one grouping set per scope (a bucket row is one whose mark was found)
    buckets AS
    (
        SELECT
            c.tenant AS tenant, c.team AS team,
            team_mark.found AS team_found, team_mark.at AS team_at,
            ticket_mark.found AS ticket_found, ticket_mark.ticket AS mark_ticket, ticket_mark.at AS ticket_at,
            count() AS bucket_calls,
            sum(c.cost_nanos) AS bucket_cost_nanos,
            countIf(c.unpriced) AS bucket_unpriced_calls
        FROM
        (
            SELECT tenant, team, occurred_at, ifNull(ticket_id, '') AS ticket,
                   toInt128(ifNull(cost_total_nanos, 0)) AS cost_nanos, unpriced
            FROM llm_calls FINAL
        ) AS c
        ASOF LEFT JOIN (SELECT DISTINCT tenant, team, at, true AS found FROM readings WHERE scope = 0) AS team_mark
            ON c.tenant = team_mark.tenant AND c.team = team_mark.team AND c.occurred_at <= team_mark.at
        ASOF LEFT JOIN (SELECT DISTINCT tenant, team, ticket, at, true AS found FROM readings WHERE scope = 1) AS ticket_mark
            ON c.tenant = ticket_mark.tenant AND c.team = ticket_mark.team AND c.ticket = ticket_mark.ticket
               AND c.occurred_at <= ticket_mark.at
        GROUP BY GROUPING SETS
            ((tenant, team, team_found, team_at), (tenant, team, ticket_found, mark_ticket, ticket_at))
    ),
    prefix_sums AS
    (
        SELECT
            tenant, team,
            if(team_found, 0, 1) AS sum_scope,
            if(team_found, '', mark_ticket) AS sum_ticket,
            if(team_found, team_at, ticket_at) AS sum_at,
            sum(bucket_calls) OVER upto AS upto_calls,
            sum(bucket_cost_nanos) OVER upto AS upto_cost_nanos,
            sum(bucket_unpriced_calls) OVER upto AS upto_unpriced_calls
        FROM buckets
        WHERE team_found OR ticket_found
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
    buckets AS
    (
        SELECT
            c.tenant AS tenant, c.team AS team, c.scope AS mark_scope, c.ticket AS mark_ticket, m.at AS mark_at,
            sum(c.cost_nanos) AS bucket_cost_nanos
        FROM
        (
            SELECT tenant, team, if(ticket_id IS NULL, 0, 1) AS scope, ifNull(ticket_id, '') AS ticket, occurred_at,
                   toInt128(ifNull(cost_total_nanos, 0)) AS cost_nanos
            FROM llm_calls FINAL
        ) AS c
        ASOF INNER JOIN (SELECT DISTINCT tenant, team, scope, ticket, at FROM readings) AS m
            ON c.tenant = m.tenant AND c.team = m.team AND c.scope = m.scope AND c.ticket = m.ticket
               AND c.occurred_at <= m.at
        GROUP BY tenant, team, mark_scope, mark_ticket, mark_at
    ),
    prefix_sums AS
    (
        SELECT
            tenant, team, mark_scope, mark_ticket, mark_at,
            sum(bucket_cost_nanos) OVER (PARTITION BY tenant, team, mark_scope, mark_ticket ORDER BY mark_at ASC
                                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto_cost_nanos
        FROM buckets
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
