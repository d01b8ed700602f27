-- Readers who may see one tenant only: a role, its grant, and a row policy on every table
-- of the tally database that has a `tenant` column (views read through them, so
-- `spend_window_totals`, `cost_per_ticket`, `emissions_monthly`, ... are filtered too).
--
-- Not applied by `tally migrate`: access control is the deployment's. Replace {database}
-- and {tenant}, then run it as a user with access management, statement by statement:
--   sed 's/{database}/tally/g; s/{tenant}/acme/g' sql/examples/tenant_row_policies.sql \
--     | clickhouse-client --multiquery
-- and give the role to the tenant's users: GRANT acme_readers TO alice;
--
-- ClickHouse shows no rows of a table that has row policies to a user none of them names:
-- the last policy keeps every row visible to everyone else (tally's own sink, admins), so
-- that user must not be granted the role.

CREATE ROLE IF NOT EXISTS {tenant}_readers;

GRANT SELECT ON {database}.* TO {tenant}_readers;

CREATE ROW POLICY IF NOT EXISTS {tenant}_only
    ON {database}.llm_calls, {database}.llm_calls_hourly, {database}.llm_calls_daily,
       {database}.deploys, {database}.tickets, {database}.spend_windows,
       {database}.loop_signals, {database}.alerts
    USING tenant = '{tenant}'
    TO {tenant}_readers;

CREATE ROW POLICY IF NOT EXISTS {tenant}_others_see_all
    ON {database}.llm_calls, {database}.llm_calls_hourly, {database}.llm_calls_daily,
       {database}.deploys, {database}.tickets, {database}.spend_windows,
       {database}.loop_signals, {database}.alerts
    USING 1
    TO ALL EXCEPT {tenant}_readers;
