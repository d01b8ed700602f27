-- LlmCall version 2: the completion's fingerprint, for loop detection and for finding agents
-- that answer the same thing again and again. NULL for calls ingested before it.
ALTER TABLE llm_calls
    ADD COLUMN IF NOT EXISTS output_fingerprint Nullable(String)
    COMMENT 'Hash of the completion; the text is never stored'
    AFTER prompt_fingerprint;
