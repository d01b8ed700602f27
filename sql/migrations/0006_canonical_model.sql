-- EnrichedLlmCall version 3: the model reports and spend windows group by, so one model sent
-- as `gemini/gemini-2.5-flash` and as `gemini-2.5-flash` is one row (see
-- tally_contract::provider::canonical_model); `model` keeps the name as sent. Rows written
-- before have it computed from `model`.
ALTER TABLE llm_calls
    ADD COLUMN IF NOT EXISTS canonical_model LowCardinality(String)
    DEFAULT if(position(lower(model), '/') > 0, substring(lower(model), position(lower(model), '/') + 1), lower(model))
    COMMENT 'Model as reports group it: the price entry''s model without a provider prefix, else the model as sent without one'
    AFTER price_entry;

CREATE OR REPLACE VIEW emissions_monthly
AS SELECT
    toStartOfMonth(occurred_at) AS month,
    tenant,
    team,
    canonical_model AS model,
    provider,
    ifNull(region, '') AS region,
    count() AS calls,
    sum(input_tokens + output_tokens) AS tokens,
    toDecimal128(sum(energy_uwh_low), 9) / 1000000000 AS energy_kwh_low,
    toDecimal128(sum(energy_uwh_central), 9) / 1000000000 AS energy_kwh_central,
    toDecimal128(sum(energy_uwh_high), 9) / 1000000000 AS energy_kwh_high,
    toDecimal128(sum(co2e_ug_low), 9) / 1000000000 AS co2e_kg_low,
    toDecimal128(sum(co2e_ug_central), 9) / 1000000000 AS co2e_kg_central,
    toDecimal128(sum(co2e_ug_high), 9) / 1000000000 AS co2e_kg_high,
    arraySort(groupUniqArray(carbon_method_version)) AS carbon_method_versions,
    arraySort(groupUniqArray(grid_dataset_version)) AS grid_dataset_versions,
    arraySort(groupUniqArray(grid_source)) AS grid_sources
FROM llm_calls FINAL
GROUP BY month, tenant, team, model, provider, region
COMMENT 'Energy (kWh) and CO2e (kg), low / central / high, per month x team x model (canonical) x provider x region, with the method and dataset versions behind them';
