-- SpendWindow version 2: a window is emitted in parts (the part of its calls when it closes,
-- and a part of each later transaction that had calls for it), and its totals are the sum of
-- its parts, so a call that arrives late still counts in its own window. A part is known by
-- the window's key and the transaction that emitted it (source_partition, source_offset):
-- a sink replay of it collapses under FINAL. Rows written before are whole windows with
-- source (0, 0): FINAL still keeps the highest revision of each, their totals.
ALTER TABLE spend_windows
    ADD COLUMN IF NOT EXISTS source_partition Int32
        COMMENT 'Input partition of the processor transaction that emitted this part' AFTER co2e_ug_high,
    ADD COLUMN IF NOT EXISTS source_offset Int64
        COMMENT 'First input offset of that transaction' AFTER source_partition,
    MODIFY ORDER BY (tenant, team, window_seconds, window_start, dimension, dimension_value, source_partition, source_offset);

ALTER TABLE spend_windows
    MODIFY COMMENT 'Parts of event-time spend windows (tally.spend_windows.v1): a window''s totals are the sum of its parts read with FINAL (see spend_window_totals).';

CREATE VIEW IF NOT EXISTS spend_window_totals
AS SELECT
    tenant, team, window_seconds, window_start, dimension, dimension_value,
    count() AS parts,
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
FROM spend_windows FINAL
GROUP BY tenant, team, window_seconds, window_start, dimension, dimension_value
COMMENT 'Each spend window''s totals: the sum of its parts (exact, Int128)';
