//! Provider usage objects, normalised to tally's token convention: input INCLUDES cache reads
//! and writes, output INCLUDES reasoning.
//!
//! | shape | recognised by | input | cache read | cache write | output | reasoning |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | OpenAI Chat Completions | `prompt_tokens` | `prompt_tokens` (includes cached) | `prompt_tokens_details.cached_tokens` | 0 | `completion_tokens` (includes reasoning) | `completion_tokens_details.reasoning_tokens` |
//! | OpenAI Responses | `input_tokens_details` / `output_tokens_details` | `input_tokens` (includes cached) | `input_tokens_details.cached_tokens` | 0 | `output_tokens` (includes reasoning) | `output_tokens_details.reasoning_tokens` |
//! | Anthropic Messages | `cache_read_input_tokens` / `cache_creation_input_tokens` | `input_tokens` + both cache fields (Anthropic's `input_tokens` EXCLUDES them) | `cache_read_input_tokens` | `cache_creation_input_tokens` | `output_tokens` | 0 (not reported apart) |
//! | Gemini | `promptTokenCount` | `promptTokenCount` (includes cached) | `cachedContentTokenCount` | 0 | `candidatesTokenCount` + `thoughtsTokenCount` (Gemini's candidates EXCLUDE thoughts) | `thoughtsTokenCount` |
//!
//! `{input_tokens, output_tokens}` with none of the distinguishing fields means the same in
//! the OpenAI Responses and Anthropic shapes (no cached tokens), so it needs no guess.
use crate::record::Record;

/// Token counts in tally's convention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub reasoning: i64,
}

/// Which provider shape a usage object had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageShape {
    OpenAiChat,
    OpenAiResponses,
    Anthropic,
    Gemini,
}

/// Reads a usage object; problems are recorded on `usage` with their paths.
pub fn read_usage(usage: &mut Record) -> (UsageShape, Tokens) {
    let shape = if usage.has("prompt_tokens") || usage.has("completion_tokens") {
        UsageShape::OpenAiChat
    } else if usage.has("promptTokenCount") || usage.has("candidatesTokenCount") {
        UsageShape::Gemini
    } else if usage.has("cache_read_input_tokens") || usage.has("cache_creation_input_tokens") {
        UsageShape::Anthropic
    } else {
        UsageShape::OpenAiResponses
    };
    let tokens = match shape {
        UsageShape::OpenAiChat => Tokens {
            input: required(usage, "prompt_tokens"),
            cache_read: detail(usage, "prompt_tokens_details", "cached_tokens"),
            cache_write: 0,
            output: required(usage, "completion_tokens"),
            reasoning: detail(usage, "completion_tokens_details", "reasoning_tokens"),
        },
        UsageShape::OpenAiResponses => Tokens {
            input: required(usage, "input_tokens"),
            cache_read: detail(usage, "input_tokens_details", "cached_tokens"),
            cache_write: 0,
            output: required(usage, "output_tokens"),
            reasoning: detail(usage, "output_tokens_details", "reasoning_tokens"),
        },
        UsageShape::Anthropic => {
            let uncached = required(usage, "input_tokens");
            let cache_read = usage.tokens("cache_read_input_tokens").unwrap_or(0);
            let cache_write = usage.tokens("cache_creation_input_tokens").unwrap_or(0);
            Tokens {
                input: uncached
                    .saturating_add(cache_read)
                    .saturating_add(cache_write),
                cache_read,
                cache_write,
                output: required(usage, "output_tokens"),
                reasoning: 0,
            }
        }
        UsageShape::Gemini => {
            let thoughts = usage.tokens("thoughtsTokenCount").unwrap_or(0);
            Tokens {
                input: required(usage, "promptTokenCount"),
                cache_read: usage.tokens("cachedContentTokenCount").unwrap_or(0),
                cache_write: 0,
                output: usage
                    .tokens("candidatesTokenCount")
                    .unwrap_or(0)
                    .saturating_add(thoughts),
                reasoning: thoughts,
            }
        }
    };
    (shape, tokens)
}

fn required(usage: &mut Record, key: &str) -> i64 {
    if !usage.has(key) {
        usage.error(key, "is required in this usage shape");
        return 0;
    }
    usage.tokens(key).unwrap_or(0)
}

fn detail(usage: &mut Record, object: &str, key: &str) -> i64 {
    let Some(mut details) = usage.nested(object) else {
        return 0;
    };
    let value = details.tokens(key).unwrap_or(0);
    usage.absorb(details);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: serde_json::Value) -> (UsageShape, Tokens) {
        let mut record = Record::new(value).unwrap();
        let out = read_usage(&mut record);
        assert!(record.finish_lenient().is_empty());
        out
    }

    // Numbers chosen so that confusing the conventions changes the answer: counting cached
    // tokens twice, or dropping them, or dropping reasoning, gives a different total.

    #[test]
    fn openai_chat_input_already_includes_cached() {
        let (shape, tokens) = read(json!({
            "prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
            "prompt_tokens_details": {"cached_tokens": 800, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 200}
        }));
        assert_eq!(shape, UsageShape::OpenAiChat);
        assert_eq!(
            tokens,
            Tokens {
                input: 1000,
                output: 300,
                cache_read: 800,
                cache_write: 0,
                reasoning: 200
            }
        );
    }

    #[test]
    fn openai_responses_input_already_includes_cached() {
        let (shape, tokens) = read(json!({
            "input_tokens": 5000, "output_tokens": 900, "total_tokens": 5900,
            "input_tokens_details": {"cached_tokens": 4096},
            "output_tokens_details": {"reasoning_tokens": 512}
        }));
        assert_eq!(shape, UsageShape::OpenAiResponses);
        assert_eq!(
            tokens,
            Tokens {
                input: 5000,
                output: 900,
                cache_read: 4096,
                cache_write: 0,
                reasoning: 512
            }
        );
    }

    #[test]
    fn anthropic_input_excludes_cache_so_it_is_added() {
        let (shape, tokens) = read(json!({
            "input_tokens": 50, "output_tokens": 700,
            "cache_read_input_tokens": 198000, "cache_creation_input_tokens": 4000,
            "cache_creation": {"ephemeral_5m_input_tokens": 4000}, "service_tier": "standard"
        }));
        assert_eq!(shape, UsageShape::Anthropic);
        assert_eq!(
            tokens,
            Tokens {
                input: 202050,
                output: 700,
                cache_read: 198000,
                cache_write: 4000,
                reasoning: 0
            }
        );
    }

    #[test]
    fn gemini_output_excludes_thoughts_so_they_are_added() {
        let (shape, tokens) = read(json!({
            "promptTokenCount": 1200, "candidatesTokenCount": 100, "thoughtsTokenCount": 400,
            "cachedContentTokenCount": 1000, "totalTokenCount": 1700
        }));
        assert_eq!(shape, UsageShape::Gemini);
        assert_eq!(
            tokens,
            Tokens {
                input: 1200,
                output: 500,
                cache_read: 1000,
                cache_write: 0,
                reasoning: 400
            }
        );
    }

    #[test]
    fn missing_counts_are_named() {
        let mut record = Record::new(json!({"prompt_tokens": 10})).unwrap();
        read_usage(&mut record);
        let errors = record.finish_lenient();
        assert_eq!(errors[0].field, "completion_tokens");
        assert_eq!(errors[0].reason, "is required in this usage shape");
    }
}
