//! One provider, one number: every spelling of every provider tally knows
//! (`tally_accounting::provider::PROVIDERS`) prices a call and estimates its energy exactly as the
//! canonical name does. The model for each provider is taken from the shipped LiteLLM
//! catalogue (its first chat entry under the provider's prefix, as a user would send it), so the
//! test covers what the catalogue knows rather than a hand-picked list.
use std::collections::BTreeMap;

use serde_json::Value;
use tally_accounting::carbon::CarbonConfig;
use tally_accounting::enrich::Enricher;
use tally_accounting::pricing::Catalogue;
use tally_accounting::provider::{canonical, PROVIDERS};
use tally_contract::records::LlmCall;

/// A chat model of the catalogue for a catalogue prefix, without the prefix.
fn catalogue_models() -> BTreeMap<String, String> {
    let text = include_str!("../data/litellm_model_prices.json");
    let catalogue: BTreeMap<String, Value> = serde_json::from_str(text).unwrap();
    let mut models = BTreeMap::new();
    for (key, entry) in &catalogue {
        let priced = entry["input_cost_per_token"].is_number()
            && entry["output_cost_per_token"].is_number()
            && entry["mode"] == "chat";
        if let (Some((prefix, model)), true) = (key.split_once('/'), priced) {
            if !model.contains('/') {
                models
                    .entry(prefix.to_string())
                    .or_insert_with(|| model.to_string());
            }
        }
    }
    models
}

fn call(provider: &str, model: &str) -> LlmCall {
    let mut call = LlmCall::new("e-1", 1_795_428_000_000_000, "acme", "t", provider, model);
    call.input_tokens = 1_000;
    call.output_tokens = 500;
    call.cache_read_tokens = 200;
    call.region = Some("eu-west-1".into());
    call
}

/// What a call is worth: (priced by, canonical model, cost, energy low/central/high, CO2e).
type Figures = (Option<String>, String, Option<i64>, [i64; 3], i64, String);

fn figures(enricher: &Enricher, provider: &str, model: &str) -> Figures {
    let enriched = enricher.enrich(call(provider, model), 0).unwrap();
    (
        enriched.price_entry,
        enriched.canonical_model,
        enriched.cost_total_nanos,
        [
            enriched.energy_uwh_low,
            enriched.energy_uwh_central,
            enriched.energy_uwh_high,
        ],
        enriched.co2e_ug_central,
        enriched.call.provider,
    )
}

#[test]
fn every_spelling_of_every_provider_gives_the_same_price_and_energy() {
    let enricher = Enricher::new(Catalogue::shipped(), CarbonConfig::default()).unwrap();
    let models = catalogue_models();
    let mut checked = 0;
    for provider in PROVIDERS {
        let model = models
            .get(provider.catalogue_prefix)
            .cloned()
            // Providers the catalogue keeps no prefixed chat entry for: a model it knows.
            .unwrap_or_else(|| "gpt-4o".to_string());
        let expected = figures(&enricher, provider.name, &model);
        assert_eq!(expected.5, provider.name);
        if models.contains_key(provider.catalogue_prefix) {
            assert!(
                expected.2.is_some(),
                "{} {model}: the catalogue prices it under {}/",
                provider.name,
                provider.catalogue_prefix
            );
        }
        for alias in provider.aliases {
            for spelling in [
                alias.to_string(),
                alias.to_uppercase(),
                alias.replace('_', "-"),
            ] {
                assert_eq!(canonical(&spelling), provider.name, "{spelling}");
                assert_eq!(
                    figures(&enricher, &spelling, &model),
                    expected,
                    "{spelling:?} and {:?} with {model}",
                    provider.name
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 150, "{checked} spellings checked");
}

#[test]
fn the_issues_cases_have_one_number_each() {
    let enricher = Enricher::new(Catalogue::shipped(), CarbonConfig::default()).unwrap();
    for (spellings, model) in [
        (
            &["mistral", "mistralai", "mistral_ai"][..],
            "mistral-small-latest",
        ),
        (
            &["gemini", "gcp.gemini", "google_genai"][..],
            "gemini-2.5-pro",
        ),
        (
            &["bedrock", "aws.bedrock", "bedrock_converse"][..],
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
    ] {
        let all: Vec<Figures> = spellings
            .iter()
            .map(|p| figures(&enricher, p, model))
            .collect();
        assert!(all[0].2.is_some(), "{model} is priced: {:?}", all[0]);
        // The energy, cost and CO2e agree (gcp.gen_ai and gcp.gemini are two names, one
        // catalogue and one data centre figure).
        for other in &all[1..] {
            assert_eq!(
                (other.2, other.3, other.4),
                (all[0].2, all[0].3, all[0].4),
                "{spellings:?}"
            );
        }
    }
    // Models too: the name with the provider's prefix groups with the name without it.
    // (Each records the catalogue key it matched in price_entry.)
    let prefixed = figures(&enricher, "gemini", "gemini/gemini-2.5-flash");
    let plain = figures(&enricher, "gcp.gemini", "gemini-2.5-flash");
    assert_eq!(
        (prefixed.2, prefixed.3, prefixed.4),
        (plain.2, plain.3, plain.4)
    );
    assert_eq!(
        (prefixed.1.as_str(), plain.1.as_str()),
        ("gemini-2.5-flash", "gemini-2.5-flash")
    );
}
