//! Provider identity, decided once: every spelling of a provider that SDKs, gateways and
//! LiteLLM send maps to one canonical name — OpenTelemetry's `gen_ai.provider.name` value where
//! it has one (`aws.bedrock`, `mistral_ai`, `gcp.gemini`), else LiteLLM's (`together_ai`).
//! Ingest stores the canonical name on every call; pricing, carbon, reports and the detectors
//! all read that one name, so one provider always gets one price and one energy figure.
//!
//! Spellings are compared lower-cased, with spaces and hyphens read as underscores; a
//! provider the table does not know keeps its name, lower-cased and trimmed.

/// One provider: its canonical name, the prefix of its keys in LiteLLM's price catalogue, and
/// the other names it goes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    /// The name every call carries.
    pub name: &'static str,
    /// The catalogue's key prefix (`bedrock` in `bedrock/anthropic.claude-…`).
    pub catalogue_prefix: &'static str,
    /// Other spellings: OpenTelemetry's deprecated `gen_ai.system` values, LiteLLM's provider
    /// names, OpenInference's `llm.provider` / `llm.system`, EcoLogits' and the providers' own.
    pub aliases: &'static [&'static str],
}

/// Every provider tally knows by more than one name, or whose catalogue prefix differs.
pub const PROVIDERS: &[Provider] = &[
    Provider {
        name: "openai",
        catalogue_prefix: "openai",
        aliases: &["text_completion_openai", "open_ai"],
    },
    Provider {
        name: "anthropic",
        catalogue_prefix: "anthropic",
        aliases: &["anthropic_ai"],
    },
    Provider {
        name: "aws.bedrock",
        catalogue_prefix: "bedrock",
        // OpenInference's `aws` is Bedrock.
        aliases: &[
            "bedrock",
            "bedrock_converse",
            "aws_bedrock",
            "amazon_bedrock",
            "amazon.bedrock",
            "aws",
        ],
    },
    Provider {
        name: "azure.ai.openai",
        catalogue_prefix: "azure",
        // OpenInference's `azure` is Azure OpenAI.
        aliases: &[
            "azure",
            "az.ai.openai",
            "azure_openai",
            "azureopenai",
            "azure.openai",
        ],
    },
    Provider {
        name: "azure.ai.inference",
        catalogue_prefix: "azure_ai",
        aliases: &["azure_ai", "az.ai.inference", "azure_ai_inference"],
    },
    Provider {
        name: "gcp.gemini",
        catalogue_prefix: "gemini",
        aliases: &["gemini", "google_ai_studio", "google_gemini", "googleai"],
    },
    Provider {
        name: "gcp.vertex_ai",
        catalogue_prefix: "vertex_ai",
        aliases: &[
            "vertex_ai",
            "vertexai",
            "vertex",
            "vertex_ai_beta",
            "google_vertex",
            "google_vertex_ai",
            "gcp.vertex",
        ],
    },
    Provider {
        // Any Google generative AI endpoint: the google-genai SDK serves both of the above
        // (EcoLogits' `google_genai`), as does OpenInference's `google`.
        name: "gcp.gen_ai",
        catalogue_prefix: "gemini",
        aliases: &[
            "google_genai",
            "google",
            "google.genai",
            "google_generativeai",
        ],
    },
    Provider {
        name: "cohere",
        catalogue_prefix: "cohere",
        aliases: &["cohere_chat", "cohere_ai"],
    },
    Provider {
        name: "mistral_ai",
        catalogue_prefix: "mistral",
        aliases: &["mistral", "mistralai", "mistral.ai"],
    },
    Provider {
        name: "x_ai",
        catalogue_prefix: "xai",
        aliases: &["xai", "x.ai"],
    },
    Provider {
        name: "deepseek",
        catalogue_prefix: "deepseek",
        aliases: &["deepseek_ai", "deepseekai"],
    },
    Provider {
        name: "groq",
        catalogue_prefix: "groq",
        aliases: &["groqcloud"],
    },
    Provider {
        name: "perplexity",
        catalogue_prefix: "perplexity",
        aliases: &["perplexity_ai", "perplexityai"],
    },
    Provider {
        name: "ibm.watsonx.ai",
        catalogue_prefix: "watsonx",
        aliases: &["watsonx", "ibm_watsonx", "watsonx.ai", "ibm.watsonx", "ibm"],
    },
    Provider {
        name: "together_ai",
        catalogue_prefix: "together_ai",
        aliases: &["together", "togetherai", "together.ai"],
    },
    Provider {
        name: "fireworks_ai",
        catalogue_prefix: "fireworks_ai",
        aliases: &["fireworks", "fireworksai", "fireworks.ai"],
    },
    Provider {
        name: "huggingface",
        catalogue_prefix: "huggingface",
        aliases: &["huggingface_hub", "hugging_face", "hf"],
    },
];

/// A spelling as the table compares it: lower-cased, trimmed, spaces and hyphens as `_`.
fn folded(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The provider a spelling names, if the table knows it.
pub fn lookup(name: &str) -> Option<&'static Provider> {
    let name = folded(name);
    PROVIDERS
        .iter()
        .find(|p| p.name == name || p.aliases.contains(&name.as_str()))
}

/// The canonical name of a provider however it was spelled; an unknown one lower-cased.
pub fn canonical(name: &str) -> String {
    match lookup(name) {
        Some(provider) => provider.name.to_string(),
        None => name.trim().to_lowercase(),
    }
}

/// The prefix of the provider's keys in LiteLLM's catalogue.
pub fn catalogue_prefix(name: &str) -> String {
    match lookup(name) {
        Some(provider) => provider.catalogue_prefix.to_string(),
        None => name.trim().to_lowercase(),
    }
}

/// The model as reports and spend windows group it: lower-cased, without a provider prefix
/// (`gemini/gemini-2.5-flash` → `gemini-2.5-flash`). The processor takes it of the catalogue
/// model a priced call matched, else of the model as sent; the call keeps the name as sent.
pub fn canonical_model(model: &str) -> String {
    let model = model.trim().to_lowercase();
    match model.split_once('/') {
        Some((_, rest)) if !rest.is_empty() => rest.to_string(),
        _ => model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_provider_is_one_name() {
        for (spelling, name) in [
            ("mistral", "mistral_ai"),
            ("mistralai", "mistral_ai"),
            ("Mistral AI", "mistral_ai"),
            ("mistral_ai", "mistral_ai"),
            ("gemini", "gcp.gemini"),
            ("google_genai", "gcp.gen_ai"),
            ("gcp.gemini", "gcp.gemini"),
            ("bedrock", "aws.bedrock"),
            ("bedrock_converse", "aws.bedrock"),
            ("AWS.Bedrock", "aws.bedrock"),
            ("az.ai.openai", "azure.ai.openai"),
            ("xai", "x_ai"),
            ("  OpenAI ", "openai"),
            ("acme-internal", "acme-internal"),
        ] {
            assert_eq!(canonical(spelling), name, "{spelling:?}");
        }
        assert_eq!(catalogue_prefix("aws.bedrock"), "bedrock");
        assert_eq!(catalogue_prefix("mistralai"), "mistral");
    }

    #[test]
    fn no_spelling_names_two_providers_and_canonical_names_are_fixed_points() {
        let mut seen = std::collections::BTreeMap::new();
        for provider in PROVIDERS {
            assert_eq!(canonical(provider.name), provider.name);
            for spelling in std::iter::once(&provider.name).chain(provider.aliases) {
                assert_eq!(folded(spelling), *spelling, "aliases are stored folded");
                if let Some(other) = seen.insert(*spelling, provider.name) {
                    panic!("{spelling} names both {other} and {}", provider.name);
                }
            }
        }
    }
}
