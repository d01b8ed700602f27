-- cost_per_ticket(unattributed_share, loaded_hourly_rate_usd): the parameterised view of
-- 0009_attribution_prefix_sums.sql for `tally up`'s store, a table function there:
-- SELECT * FROM cost_per_ticket(0.5, 120). The parameters replace {unattributed_share_e9} (the
-- share in billionths, an integer, exact) and {loaded_hourly_rate_usd}. A ticket never opened counts as opened at the epoch, as
-- ClickHouse's minIf over no rows gives. The sums are exact prefix sums, with a window function
-- where ClickHouse has ASOF JOIN: each closed ticket's readings (its team's untagged calls up to
-- closed_at, +, and up to just before opened_at, -, timestamps being whole microseconds; the
-- calls tagged with it, at any time) are marks on a timeline of the calls; a running sum over
-- each team's untagged calls (and each ticket's tagged calls) in time order, a mark after the
-- calls of its own instant, gives at each mark the sum of every call at or before it. One pass
-- over llm_calls; about (calls + tickets) x log.
WITH tickets_closed AS (
    -- CASE ... END: the de-duplicating view's columns are nullable when it runs (not when it is
    -- planned), and DataFusion refuses an aggregate whose input differs so; these say nullable.
    SELECT
        CASE WHEN tenant IS NOT NULL THEN tenant END AS tenant,
        CASE WHEN ticket_id IS NOT NULL THEN ticket_id END AS ticket_id,
        last_value(team ORDER BY occurred_at, event_id) AS team,
        last_value(kind ORDER BY occurred_at, event_id) AS kind,
        CASE WHEN true THEN coalesce(min(CASE WHEN status IN ('opened', 'in_progress') THEN occurred_at END), utc('1970-01-01')) END AS opened_at,
        max(CASE WHEN status = 'closed' THEN occurred_at END) AS closed_at,
        last_value(estimate_hours ORDER BY occurred_at, event_id) AS estimate_hours
    FROM tickets
    GROUP BY tenant, ticket_id
    HAVING sum(CASE WHEN status = 'closed' THEN 1 ELSE 0 END) > 0
),
-- scope 0: the team's untagged calls; scope 1: the calls tagged with the ticket (its whole
-- timeline, read at closed_at). A ticket closed before it opened reads no untagged calls.
readings AS (
    SELECT tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours,
           0 AS scope, '' AS ticket, closed_at AS at, 1 AS sign
    FROM tickets_closed WHERE opened_at <= closed_at
    UNION ALL
    SELECT tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours,
           0 AS scope, '' AS ticket, opened_at - INTERVAL '1 microsecond' AS at, -1 AS sign
    FROM tickets_closed WHERE opened_at <= closed_at
    UNION ALL
    SELECT tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours,
           1 AS scope, ticket_id AS ticket, closed_at AS at, 1 AS sign
    FROM tickets_closed
),
timeline AS (
    SELECT tenant, team, CASE WHEN ticket_id IS NULL THEN 0 ELSE 1 END AS scope, coalesce(ticket_id, '') AS ticket,
           occurred_at AS at, 0 AS is_mark, CAST(coalesce(cost_total_nanos, 0) AS DECIMAL(38, 0)) AS cost_nanos
    FROM llm_calls
    UNION ALL
    SELECT DISTINCT tenant, team, scope, ticket, at, 1 AS is_mark, CAST(0 AS DECIMAL(38, 0)) AS cost_nanos
    FROM readings
),
prefix_sums AS (
    SELECT tenant, team, scope, ticket, at, is_mark,
           sum(cost_nanos) OVER (PARTITION BY tenant, team, scope, ticket ORDER BY at, is_mark
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto_cost_nanos,
           sum(cost_nanos) OVER (PARTITION BY tenant, team, scope, ticket) AS all_cost_nanos
    FROM timeline
),
sums AS (
    SELECT
        r.tenant AS tenant, r.team AS team, r.ticket_id AS ticket_id, r.kind AS kind,
        r.opened_at AS opened_at, r.closed_at AS closed_at, r.estimate_hours AS estimate_hours,
        sum(CASE WHEN r.scope = 1 THEN p.all_cost_nanos ELSE 0 END) AS tagged_cost_nanos,
        sum(CASE WHEN r.scope = 0 THEN r.sign * p.upto_cost_nanos ELSE 0 END) AS unattributed_team_cost_nanos
    FROM readings AS r
    JOIN prefix_sums AS p
        ON p.is_mark = 1 AND p.tenant = r.tenant AND p.team = r.team AND p.scope = r.scope AND p.ticket = r.ticket AND p.at = r.at
    GROUP BY 1, 2, 3, 4, 5, 6, 7
)
SELECT
    tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours,
    tagged_cost_nanos, unattributed_team_cost_nanos,
    tagged_cost_nanos + intdiv(unattributed_team_cost_nanos * {unattributed_share_e9}, 1000000000) AS attributed_cost_nanos,
    scale9(tagged_cost_nanos + intdiv(unattributed_team_cost_nanos * {unattributed_share_e9}, 1000000000)) AS attributed_cost_usd,
    estimate_hours * {loaded_hourly_rate_usd} AS human_cost_usd
FROM sums
