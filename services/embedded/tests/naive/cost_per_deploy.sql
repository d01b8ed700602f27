-- The oracle of the differential test (attribution_differential.rs): cost_per_deploy as
-- sql/datafusion/views.sql had it before the prefix sums, verbatim — every deploy joined to
-- every call of its team, the window a condition inside the sum (deploys x calls).
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
