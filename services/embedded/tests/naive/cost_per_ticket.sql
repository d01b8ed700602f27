-- The oracle of the differential test (attribution_differential.rs): the body of
-- cost_per_ticket as sql/datafusion/cost_per_ticket.sql had it before the prefix sums,
-- verbatim — every closed ticket joined to every call of its team (tickets x calls).
-- cost_per_ticket(unattributed_share, loaded_hourly_rate_usd): the parameterised view of
-- 0003_views.sql for `tally up`'s store, a table function there:
-- SELECT * FROM cost_per_ticket(0.5, 120). The parameters replace {unattributed_share_e9} (the
-- share in billionths, an integer, exact) and {loaded_hourly_rate_usd}. A ticket never opened counts as opened at the epoch, as
-- ClickHouse's minIf over no rows gives.
WITH tickets_closed AS (
    SELECT
        tenant, ticket_id,
        last_value(team ORDER BY occurred_at) AS team,
        last_value(kind ORDER BY occurred_at) AS kind,
        coalesce(min(CASE WHEN status IN ('opened', 'in_progress') THEN occurred_at END), utc('1970-01-01')) AS opened_at,
        max(CASE WHEN status = 'closed' THEN occurred_at END) AS closed_at,
        last_value(estimate_hours ORDER BY occurred_at) AS estimate_hours
    FROM tickets
    GROUP BY tenant, ticket_id
    HAVING sum(CASE WHEN status = 'closed' THEN 1 ELSE 0 END) > 0
),
sums AS (
    SELECT
        t.tenant AS tenant, t.team AS team, t.ticket_id AS ticket_id, t.kind AS kind,
        t.opened_at AS opened_at, t.closed_at AS closed_at, t.estimate_hours AS estimate_hours,
        sum(CASE WHEN c.ticket_id = t.ticket_id THEN CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0)) ELSE 0 END) AS tagged_cost_nanos,
        sum(CASE WHEN c.ticket_id IS NULL AND c.occurred_at >= t.opened_at AND c.occurred_at <= t.closed_at
                 THEN CAST(coalesce(c.cost_total_nanos, 0) AS DECIMAL(38, 0)) ELSE 0 END) AS unattributed_team_cost_nanos
    FROM tickets_closed AS t
    LEFT JOIN llm_calls AS c ON c.tenant = t.tenant AND c.team = t.team
    GROUP BY 1, 2, 3, 4, 5, 6, 7
)
SELECT
    tenant, team, ticket_id, kind, opened_at, closed_at, estimate_hours,
    tagged_cost_nanos, unattributed_team_cost_nanos,
    tagged_cost_nanos + intdiv(unattributed_team_cost_nanos * {unattributed_share_e9}, 1000000000) AS attributed_cost_nanos,
    scale9(tagged_cost_nanos + intdiv(unattributed_team_cost_nanos * {unattributed_share_e9}, 1000000000)) AS attributed_cost_usd,
    estimate_hours * {loaded_hourly_rate_usd} AS human_cost_usd
FROM sums
