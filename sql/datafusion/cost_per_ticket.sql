-- cost_per_ticket(unattributed_share, loaded_hourly_rate_usd): the parameterised view of
-- 0009_attribution_prefix_sums.sql for `tally up`'s store, a table function there:
-- SELECT * FROM cost_per_ticket(0.5, 120). The parameters replace {unattributed_share_e9} (the
-- share in billionths, an integer, exact) and {loaded_hourly_rate_usd}. A ticket never opened counts as opened at the epoch, as
-- ClickHouse's minIf over no rows gives. The sums are exact: each closed ticket reads its
-- team's untagged calls up to closed_at, +, and up to just before opened_at, -, timestamps
-- being whole microseconds (marks; each untagged call goes to the bucket of the first mark at
-- or after it through the marks' intervals cut at the hours with calls, and a running sum over the
-- buckets is, at each mark, the sum of every untagged call at or before it), and the calls
-- tagged with it at any time (a sum per ticket). No sort of the calls.
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
-- each instant the team's untagged calls are read at (a mark), numbered, with the mark before
-- it: an untagged call belongs to the first mark at or after it, the interval (after, at]
marks AS (
    SELECT tenant, team, at,
           lag(at, 1) OVER (PARTITION BY tenant, team ORDER BY at) AS after,
           row_number() OVER (ORDER BY tenant, team, at) AS mark
    FROM (SELECT DISTINCT tenant, team, at FROM readings WHERE scope = 0)
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
    WHERE h.hour <= m.at AND (m.after IS NULL OR h.hour + INTERVAL '1 hour' > m.after)
),
buckets AS (
    SELECT p.mark AS mark, sum(CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0))) AS cost_nanos
    FROM llm_calls AS c
    JOIN pieces AS p ON p.tenant = c.tenant AND p.team = c.team AND p.hour = date_bin(INTERVAL '1 hour', c.occurred_at)
    WHERE c.ticket_id IS NULL AND c.occurred_at <= p.at AND (p.after IS NULL OR c.occurred_at > p.after)
    GROUP BY p.mark
),
prefix_sums AS (
    SELECT m.tenant AS tenant, m.team AS team, m.at AS at,
           sum(coalesce(b.cost_nanos, CAST(0 AS DECIMAL(38, 0))))
               OVER (PARTITION BY m.tenant, m.team ORDER BY m.at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS upto_cost_nanos
    FROM marks AS m
    LEFT JOIN buckets AS b ON b.mark = m.mark
),
-- the calls tagged with each ticket, at any time
tagged AS (
    SELECT tenant, team, ticket_id AS ticket, sum(CAST(coalesce(cost_total_nanos, 0) AS DECIMAL(38, 0))) AS cost_nanos
    FROM llm_calls
    WHERE ticket_id IS NOT NULL
    GROUP BY 1, 2, 3
),
sums AS (
    SELECT
        r.tenant AS tenant, r.team AS team, r.ticket_id AS ticket_id, r.kind AS kind,
        r.opened_at AS opened_at, r.closed_at AS closed_at, r.estimate_hours AS estimate_hours,
        sum(CASE WHEN r.scope = 1 THEN coalesce(t.cost_nanos, CAST(0 AS DECIMAL(38, 0))) ELSE CAST(0 AS DECIMAL(38, 0)) END) AS tagged_cost_nanos,
        sum(CASE WHEN r.scope = 0 THEN CAST(r.sign AS DECIMAL(38, 0)) * p.upto_cost_nanos ELSE CAST(0 AS DECIMAL(38, 0)) END) AS unattributed_team_cost_nanos
    FROM readings AS r
    LEFT JOIN prefix_sums AS p ON r.scope = 0 AND p.tenant = r.tenant AND p.team = r.team AND p.at = r.at
    LEFT JOIN tagged AS t ON r.scope = 1 AND t.tenant = r.tenant AND t.team = r.team AND t.ticket = r.ticket
    GROUP BY 1, 2, 3, 4, 5, 6, 7
)
SELECT
    tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours,
    tagged_cost_nanos, unattributed_team_cost_nanos,
    tagged_cost_nanos + intdiv(unattributed_team_cost_nanos * {unattributed_share_e9}, 1000000000) AS attributed_cost_nanos,
    scale9(tagged_cost_nanos + intdiv(unattributed_team_cost_nanos * {unattributed_share_e9}, 1000000000)) AS attributed_cost_usd,
    estimate_hours * {loaded_hourly_rate_usd} AS human_cost_usd
FROM sums
