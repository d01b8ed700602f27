//! The price catalogue and the cost of a call, in exact integer nano-dollars.
//!
//! Prices come in the format of LiteLLM's `model_prices_and_context_window.json` (dollars per
//! token). The shipped snapshot is `data/litellm_model_prices.json` (see `data/README.md`);
//! users may point at their own file and add overrides (negotiated prices, private models),
//! each optionally effective-dated. A catalogue entry may carry `effective_from` /
//! `effective_to` (RFC 3339) and a `model` field naming the model it prices, so several keys
//! (`gpt-4o@2026-12`) can price one model for different periods; a call is priced with the
//! entry in force at its `occurred_at` (of several, the one that took effect last).
//!
//! The formula, per call, each term rounded once, half to even, to nano-dollars:
//!
//! ```text
//! uncached_input = input_tokens - cache_read_tokens - cache_write_tokens
//! cost = uncached_input                      × input rate
//!      + cache_read_tokens                   × cache-read rate     (else the input rate)
//!      + cache_write_tokens                  × cache-creation rate (else the input rate)
//!      + (output_tokens - reasoning_tokens)  × output rate
//!      + reasoning_tokens                    × reasoning rate      (else the output rate)
//! ```
//!
//! Rates: when `input_tokens` exceeds N×1000 for an entry that has `*_above_<N>k_tokens`
//! rates, those apply to the whole call (the largest such N). Service tiers `batch`,
//! `priority`, `flex` use the `*_batches`, `*_priority`, `*_flex` variants when present. For
//! each rate the candidates are, in order: threshold+tier, threshold, tier, standard.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tally_contract::records::{LlmCall, Micros, ServiceTier};

use crate::decimal::Decimal;

/// The shipped LiteLLM snapshot.
pub const SHIPPED_CATALOGUE: &str = include_str!("../data/litellm_model_prices.json");
/// Its version: LiteLLM release and the date it was taken.
pub const SHIPPED_CATALOGUE_VERSION: &str = "litellm-1.109.1@2026-11-23";

const BASE_RATES: [&str; 5] = [
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
];

/// One catalogue entry: the token rates of a model, maybe only for a period.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceEntry {
    /// The catalogue key (`gpt-4o`, `bedrock/anthropic.claude-...`).
    pub key: String,
    /// Token rates in dollars per token, by LiteLLM field name.
    pub rates: BTreeMap<String, Decimal>,
    /// In force from this time (inclusive), if limited.
    pub effective_from: Option<Micros>,
    /// In force until this time (exclusive), if limited.
    pub effective_to: Option<Micros>,
}

impl PriceEntry {
    fn in_force(&self, at: Micros) -> bool {
        self.effective_from.is_none_or(|from| at >= from)
            && self.effective_to.is_none_or(|to| at < to)
    }
}

/// A price override from tally's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverride {
    /// Catalogue key the override prices (an existing model or a private one).
    pub model: String,
    /// RFC 3339 start (inclusive) of the period the prices hold for; always, if absent.
    #[serde(default)]
    pub effective_from: Option<String>,
    /// RFC 3339 end (exclusive) of the period; open-ended, if absent.
    #[serde(default)]
    pub effective_to: Option<String>,
    /// Rates in dollars per token, by LiteLLM field name (`input_cost_per_token`,
    /// `cache_read_input_token_cost_batches`, ...); strings keep them exact ("2.5e-06").
    pub rates: BTreeMap<String, Decimal>,
}

/// The cost of one call, term by term, in nano-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CostTerms {
    pub input: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub output: i64,
    pub reasoning: i64,
    pub total: i64,
}

/// What pricing a call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    /// Priced with the named entry, found under the catalogue model `model`.
    Priced {
        entry: String,
        model: String,
        terms: CostTerms,
    },
    /// No entry matched (or it has no token rates): cost unknown, never 0.
    Unpriced { reason: String },
}

/// A call the catalogue cannot price because its numbers are inconsistent; such a call goes
/// to the dead-letter topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingError(pub String);

/// All price entries, by lower-cased key.
#[derive(Debug, Clone)]
pub struct Catalogue {
    version: String,
    entries: HashMap<String, Vec<PriceEntry>>,
    resolved: ResolvedKeys,
}

/// How many (provider, response model, model) spellings [`ResolvedKeys`] remembers; past
/// that it starts again, so callers cannot grow it without bound.
const MAX_RESOLVED: usize = 4_096;

/// The catalogue keys each (provider, response model, model) a call names resolves to, in
/// the order [`Catalogue::lookup`] tries them: [`candidates`] builds a dozen strings per
/// spelling, and a stream repeats few spellings. Which entry of a key is in force still
/// depends on the call's time, so that is decided per call. A clone starts empty.
#[derive(Debug, Default)]
struct ResolvedKeys(Mutex<HashMap<String, Arc<[String]>>>);

impl Clone for ResolvedKeys {
    fn clone(&self) -> Self {
        ResolvedKeys::default()
    }
}

impl Catalogue {
    /// The shipped snapshot.
    pub fn shipped() -> Catalogue {
        Catalogue::from_litellm_json(SHIPPED_CATALOGUE, SHIPPED_CATALOGUE_VERSION)
            .expect("the shipped catalogue parses (a test checks it)")
    }

    /// Reads a LiteLLM-format catalogue. Token-rate fields are read from their JSON text, so
    /// no price passes through a float.
    pub fn from_litellm_json(text: &str, version: &str) -> Result<Catalogue, String> {
        let raw: HashMap<String, Box<RawValue>> = serde_json::from_str(text)
            .map_err(|e| format!("the catalogue is not a JSON object: {e}"))?;
        let mut entries: HashMap<String, Vec<PriceEntry>> = HashMap::new();
        for (key, value) in raw {
            if key == "sample_spec" {
                continue;
            }
            let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(value.get())
            else {
                continue; // not an object: not a model entry
            };
            let text_field = |name: &str| -> Result<Option<String>, String> {
                fields
                    .get(name)
                    .map(|raw| {
                        serde_json::from_str::<String>(raw.get()).map_err(|_| {
                            format!("catalogue entry {key:?}, field {name}: expected a string")
                        })
                    })
                    .transpose()
            };
            let at = format!("catalogue entry {key:?}");
            let effective_from = parse_time(&text_field("effective_from")?, &at, "effective_from")?;
            let effective_to = parse_time(&text_field("effective_to")?, &at, "effective_to")?;
            let model = text_field("model")?.unwrap_or_else(|| key.clone());
            let mut rates = BTreeMap::new();
            for (field, raw) in &fields {
                if !is_token_rate(field) {
                    continue;
                }
                let rate: Decimal = raw
                    .get()
                    .parse()
                    .map_err(|e| format!("catalogue entry {key:?}, field {field}: {e}"))?;
                rates.insert(field.clone(), rate);
            }
            let entry = PriceEntry {
                key: key.clone(),
                rates,
                effective_from,
                effective_to,
            };
            entries.entry(model.to_lowercase()).or_default().push(entry);
        }
        // Of several entries in force for a model, the one that took effect last wins.
        for list in entries.values_mut() {
            list.sort_by_key(|e| std::cmp::Reverse(e.effective_from));
        }
        Ok(Catalogue {
            version: version.to_string(),
            entries,
            resolved: ResolvedKeys::default(),
        })
    }

    /// Adds configured overrides; an override takes precedence over catalogue entries in force
    /// at the same time. The version gains a digest of the overrides.
    pub fn with_overrides(mut self, overrides: &[PriceOverride]) -> Result<Catalogue, String> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut digest = Sha256::new();
        for (i, price) in overrides.iter().enumerate() {
            let at = format!("pricing.overrides[{i}] ({})", price.model);
            for field in price.rates.keys() {
                if !is_token_rate(field) {
                    return Err(format!(
                        "{at}: {field} is not a token rate (expected one of {} with optional _above_<N>k_tokens and _batches/_priority/_flex)",
                        BASE_RATES.join(", ")
                    ));
                }
            }
            if !price.rates.contains_key("input_cost_per_token")
                || !price.rates.contains_key("output_cost_per_token")
            {
                return Err(format!(
                    "{at}: input_cost_per_token and output_cost_per_token are required"
                ));
            }
            if let Some((field, _)) = price.rates.iter().find(|(_, rate)| rate.is_negative()) {
                return Err(format!("{at}: {field} must not be negative"));
            }
            let parse = |value: &Option<String>, name: &str| -> Result<Option<Micros>, String> {
                value
                    .as_ref()
                    .map(|text| {
                        time::OffsetDateTime::parse(
                            text,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .map(|t| (t.unix_timestamp_nanos() / 1_000) as Micros)
                        .map_err(|e| format!("{at}.{name}: {text:?} is not RFC 3339: {e}"))
                    })
                    .transpose()
            };
            let entry = PriceEntry {
                key: price.model.clone(),
                rates: price.rates.clone(),
                effective_from: parse(&price.effective_from, "effective_from")?,
                effective_to: parse(&price.effective_to, "effective_to")?,
            };
            digest.update(format!("{price:?}").as_bytes());
            // Overrides go first: the first entry in force wins.
            self.entries
                .entry(price.model.to_lowercase())
                .or_default()
                .insert(0, entry);
        }
        let hex: String = digest.finalize()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.version = format!("{}+overrides-{hex}", self.version);
        self.resolved = ResolvedKeys::default();
        Ok(self)
    }

    /// The version every enriched call records.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of catalogue keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the catalogue is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry in force at the call's time for its model: the response model first (often a
    /// dated snapshot with its own price), then the requested model, each tried as given, with
    /// the provider's catalogue prefix, and normalised (see [`candidates`]).
    pub fn lookup(&self, call: &LlmCall) -> Option<&PriceEntry> {
        self.find(call).map(|(_, entry)| entry)
    }

    /// The catalogue model a call's model matched, and the entry in force for it.
    fn find(&self, call: &LlmCall) -> Option<(String, &PriceEntry)> {
        self.keys_of(call).iter().find_map(|key| {
            let entry = self
                .entries
                .get(key)?
                .iter()
                .find(|e| e.in_force(call.occurred_at))?;
            Some((key.clone(), entry))
        })
    }

    /// The catalogue's keys among the call's models' [`candidates`], in order.
    fn keys_of(&self, call: &LlmCall) -> Arc<[String]> {
        // Length-prefixed, so no two spellings share a key.
        let response = call.response_model.as_deref();
        let spelling = format!(
            "{}:{}{}:{}{}:{}",
            call.provider.len(),
            call.provider,
            response.map_or(-1, |r| r.len() as i64),
            response.unwrap_or_default(),
            call.model.len(),
            call.model
        );
        let mut resolved = self.resolved.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(keys) = resolved.get(&spelling) {
            return keys.clone();
        }
        let keys: Arc<[String]> = call
            .response_model
            .iter()
            .chain(std::iter::once(&call.model))
            .flat_map(|model| candidates(&call.provider, model))
            .filter(|key| self.entries.contains_key(key))
            .collect();
        if resolved.len() >= MAX_RESOLVED {
            resolved.clear();
        }
        resolved.insert(spelling, keys.clone());
        keys
    }

    /// Prices a call.
    pub fn price(&self, call: &LlmCall) -> Result<Pricing, PricingError> {
        let Some((model, entry)) = self.find(call) else {
            return Ok(Pricing::Unpriced {
                reason: format!(
                    "no catalogue entry for provider {:?} model {:?}",
                    call.provider, call.model
                ),
            });
        };
        match cost(entry, call)? {
            Some(terms) => Ok(Pricing::Priced {
                entry: entry.key.clone(),
                model: canonical_model(&model),
                terms,
            }),
            None => Ok(Pricing::Unpriced {
                reason: format!(
                    "catalogue entry {:?} has no per-token input and output rates",
                    entry.key
                ),
            }),
        }
    }
}

/// An optional RFC 3339 time, as epoch microseconds; errors name where it was.
fn parse_time(value: &Option<String>, at: &str, name: &str) -> Result<Option<Micros>, String> {
    value
        .as_ref()
        .map(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000) as Micros)
                .map_err(|e| format!("{at}.{name}: {text:?} is not RFC 3339: {e}"))
        })
        .transpose()
}

fn is_token_rate(field: &str) -> bool {
    let field = ["_batches", "_priority", "_flex"]
        .iter()
        .find_map(|tier| field.strip_suffix(tier))
        .unwrap_or(field);
    let field = match field.rsplit_once("_above_") {
        Some((base, threshold)) => match threshold_of(threshold) {
            Some(_) => base,
            None => return false,
        },
        None => field,
    };
    BASE_RATES.contains(&field)
}

/// `200k_tokens` → 200,000.
fn threshold_of(suffix: &str) -> Option<i64> {
    suffix
        .strip_suffix("k_tokens")?
        .parse::<i64>()
        .ok()
        .map(|k| k * 1000)
}

fn tier_suffix(tier: ServiceTier) -> &'static str {
    match tier {
        ServiceTier::Standard => "",
        ServiceTier::Batch => "_batches",
        ServiceTier::Priority => "_priority",
        ServiceTier::Flex => "_flex",
    }
}

/// The largest `_above_<N>k_tokens` threshold of the entry that the call's input exceeds.
fn threshold_suffix(entry: &PriceEntry, input_tokens: i64) -> Option<String> {
    entry
        .rates
        .keys()
        .filter_map(|field| field.split_once("_above_").map(|(_, rest)| rest))
        .filter_map(|rest| {
            let suffix = rest.split('_').take(2).collect::<Vec<_>>().join("_");
            threshold_of(&suffix).map(|n| (n, suffix))
        })
        .filter(|(n, _)| input_tokens > *n)
        .max_by_key(|(n, _)| *n)
        .map(|(_, suffix)| format!("_above_{suffix}"))
}

fn rate(entry: &PriceEntry, base: &str, threshold: Option<&str>, tier: &str) -> Option<Decimal> {
    // The most specific field first; one buffer for the names, as this runs per call.
    let mut name = String::with_capacity(base.len() + 48);
    let mut get = |parts: &[&str]| {
        name.clear();
        parts.iter().for_each(|part| name.push_str(part));
        entry.rates.get(name.as_str()).copied()
    };
    threshold
        .and_then(|threshold| get(&[base, threshold, tier]).or_else(|| get(&[base, threshold])))
        .or_else(|| get(&[base, tier]))
        .or_else(|| entry.rates.get(base).copied())
}

fn cost(entry: &PriceEntry, call: &LlmCall) -> Result<Option<CostTerms>, PricingError> {
    let threshold = threshold_suffix(entry, call.input_tokens);
    let threshold = threshold.as_deref();
    let tier = tier_suffix(call.service_tier);
    let (Some(input_rate), Some(output_rate)) = (
        rate(entry, "input_cost_per_token", threshold, tier),
        rate(entry, "output_cost_per_token", threshold, tier),
    ) else {
        return Ok(None);
    };
    let cache_read_rate =
        rate(entry, "cache_read_input_token_cost", threshold, tier).unwrap_or(input_rate);
    let cache_write_rate =
        rate(entry, "cache_creation_input_token_cost", threshold, tier).unwrap_or(input_rate);
    let reasoning_rate =
        rate(entry, "output_cost_per_reasoning_token", threshold, tier).unwrap_or(output_rate);

    let uncached = call.input_tokens - call.cache_read_tokens - call.cache_write_tokens;
    let plain_output = call.output_tokens - call.reasoning_tokens;
    if uncached < 0 || plain_output < 0 {
        return Err(PricingError(format!(
            "inconsistent tokens: input {} < cache read {} + cache write {}, or output {} < reasoning {}",
            call.input_tokens, call.cache_read_tokens, call.cache_write_tokens, call.output_tokens, call.reasoning_tokens
        )));
    }
    let term = |tokens: i64, rate: Decimal| -> Result<i64, PricingError> {
        Decimal::from_int(tokens)
            .checked_mul(rate)
            .and_then(|dollars| dollars.round_scaled(9))
            .map_err(|e| PricingError(format!("{tokens} tokens at {rate} $/token: {e}")))
    };
    let mut terms = CostTerms {
        input: term(uncached, input_rate)?,
        cache_read: term(call.cache_read_tokens, cache_read_rate)?,
        cache_write: term(call.cache_write_tokens, cache_write_rate)?,
        output: term(plain_output, output_rate)?,
        reasoning: term(call.reasoning_tokens, reasoning_rate)?,
        total: 0,
    };
    terms.total = [
        terms.input,
        terms.cache_read,
        terms.cache_write,
        terms.output,
        terms.reasoning,
    ]
    .iter()
    .try_fold(0i64, |sum, t| sum.checked_add(*t))
    .ok_or_else(|| PricingError("the total cost overflows".into()))?;
    Ok(Some(terms))
}

pub use crate::provider::canonical_model;

/// Catalogue keys to try for a model, in order: as given; with the provider's catalogue
/// prefix; without a provider prefix it carries (`openai/gpt-4o` → `gpt-4o`); without a
/// cross-region prefix (`us.anthropic...` → `anthropic...`); without a version or date
/// suffix (`-2024-08-06`, `-20240620`, `@20240620`, `-v1:0`, `-latest`). All lower-cased.
pub fn candidates(provider: &str, model: &str) -> Vec<String> {
    let prefix = crate::provider::catalogue_prefix(provider);
    let model = model.trim().to_lowercase();
    let mut forms = vec![model.clone()];
    if let Some((_, rest)) = model.split_once('/') {
        forms.push(rest.to_string());
    }
    for form in forms.clone() {
        for region in ["us.", "eu.", "apac.", "global."] {
            if let Some(rest) = form.strip_prefix(region) {
                forms.push(rest.to_string());
            }
        }
    }
    for form in forms.clone() {
        let undated = strip_version_suffixes(&form);
        if undated != form {
            forms.push(undated);
        }
    }
    let mut out = Vec::with_capacity(forms.len() * 2);
    for form in forms {
        out.push(form.clone());
        out.push(format!("{prefix}/{form}"));
    }
    out.dedup();
    out
}

fn strip_version_suffixes(model: &str) -> String {
    let mut model = model.to_string();
    loop {
        let before = model.len();
        if let Some(rest) = model.strip_suffix("-latest") {
            model = rest.to_string();
        }
        // -v1:0, -v2
        if let Some(at) = model.rfind("-v") {
            let tail = &model[at + 2..];
            if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit() || b == b':') {
                model.truncate(at);
            }
        }
        let bytes = model.as_bytes();
        let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
        let n = bytes.len();
        // -2024-08-06
        let dated = n > 11 && {
            let s = n - 11;
            bytes[s] == b'-'
                && bytes[s + 5] == b'-'
                && bytes[s + 8] == b'-'
                && digits(s + 1..s + 5)
                && digits(s + 6..s + 8)
                && digits(s + 9..n)
        };
        if dated {
            model.truncate(n - 11);
        } else if n > 9 && (bytes[n - 9] == b'-' || bytes[n - 9] == b'@') && digits(n - 8..n) {
            // -20240620, @20240620
            model.truncate(n - 9);
        }
        if model.len() == before {
            return model;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(provider: &str, model: &str, tokens: [i64; 5], tier: ServiceTier) -> LlmCall {
        let mut call = LlmCall::new(
            "e",
            1_795_428_000_000_000,
            "acme",
            "payments",
            provider,
            model,
        );
        [
            call.input_tokens,
            call.output_tokens,
            call.cache_read_tokens,
            call.cache_write_tokens,
            call.reasoning_tokens,
        ] = tokens;
        call.service_tier = tier;
        call
    }

    fn priced(catalogue: &Catalogue, call: &LlmCall) -> (String, CostTerms) {
        match catalogue.price(call).unwrap() {
            Pricing::Priced { entry, terms, .. } => (entry, terms),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_shipped_catalogue_parses_with_thousands_of_models() {
        let catalogue = Catalogue::shipped();
        assert!(catalogue.len() > 3_000, "{}", catalogue.len());
        assert_eq!(catalogue.version(), "litellm-1.109.1@2026-11-23");
    }

    #[test]
    fn gpt_4o_every_term_by_hand() {
        // gpt-4o: input $2.5e-06, cache read $1.25e-06, output $1e-05, no reasoning rate.
        let c = call(
            "openai",
            "gpt-4o",
            [1000, 300, 800, 0, 200],
            ServiceTier::Standard,
        );
        let (entry, terms) = priced(&Catalogue::shipped(), &c);
        assert_eq!(entry, "gpt-4o");
        assert_eq!(
            terms,
            CostTerms {
                input: 500_000,        // 200 uncached × 2.5e-06 $ = $0.0005
                cache_read: 1_000_000, // 800 × 1.25e-06
                cache_write: 0,
                output: 1_000_000,    // 100 × 1e-05
                reasoning: 2_000_000, // 200 × 1e-05 (falls back to the output rate)
                total: 4_500_000,
            }
        );
    }

    #[test]
    fn anthropic_cache_writes_batch_tier_and_dated_snapshots() {
        let catalogue = Catalogue::shipped();
        // claude-sonnet-4-5: input 3e-06, cache write 3.75e-06, cache read 3e-07, output 1.5e-05.
        let c = call(
            "anthropic",
            "claude-sonnet-4-5",
            [202_050, 700, 198_000, 4_000, 0],
            ServiceTier::Standard,
        );
        let (_, terms) = priced(&catalogue, &c);
        assert_eq!(
            (
                terms.input,
                terms.cache_read,
                terms.cache_write,
                terms.output
            ),
            (150_000, 59_400_000, 15_000_000, 10_500_000)
        );
        assert_eq!(terms.total, 85_050_000);
        // Batch: input 1.5e-06, cache write 1.875e-06, cache read 1.5e-07, output 7.5e-06.
        let batch = call(
            "anthropic",
            "claude-sonnet-4-5",
            [202_050, 700, 198_000, 4_000, 0],
            ServiceTier::Batch,
        );
        let (_, terms) = priced(&catalogue, &batch);
        assert_eq!(
            (
                terms.input,
                terms.cache_read,
                terms.cache_write,
                terms.output
            ),
            (75_000, 29_700_000, 7_500_000, 5_250_000)
        );
        // A dated response model that the catalogue knows by itself.
        let mut dated = call(
            "anthropic",
            "claude-sonnet-4-5",
            [10, 1, 0, 0, 0],
            ServiceTier::Standard,
        );
        dated.response_model = Some("claude-sonnet-4-5-20250929".into());
        assert_eq!(priced(&catalogue, &dated).0, "claude-sonnet-4-5-20250929");
    }

    #[test]
    fn above_threshold_rates_apply_to_the_whole_call() {
        let catalogue = Catalogue::shipped();
        // gemini-2.5-pro: 1.25e-06 / 1e-05, above 200k: 2.5e-06 / 1.5e-05.
        let small = call(
            "gcp.gemini",
            "gemini-2.5-pro",
            [200_000, 1000, 0, 0, 0],
            ServiceTier::Standard,
        );
        let (_, terms) = priced(&catalogue, &small);
        assert_eq!(
            (terms.input, terms.output),
            (250_000_000, 10_000_000),
            "exactly 200k is not above it"
        );
        let large = call(
            "gcp.gemini",
            "gemini-2.5-pro",
            [200_001, 1000, 0, 0, 0],
            ServiceTier::Standard,
        );
        let (_, terms) = priced(&catalogue, &large);
        assert_eq!((terms.input, terms.output), (500_002_500, 15_000_000));
        // Priority above the threshold has its own rate: 4.5e-06 input, 2.7e-05 output.
        let priority = call(
            "gcp.gemini",
            "gemini-2.5-pro",
            [300_000, 1000, 0, 0, 0],
            ServiceTier::Priority,
        );
        let (_, terms) = priced(&catalogue, &priority);
        assert_eq!((terms.input, terms.output), (1_350_000_000, 27_000_000));
    }

    #[test]
    fn lookups_normalise_prefixes_and_suffixes_and_unknown_models_are_unpriced() {
        let catalogue = Catalogue::shipped();
        for model in [
            "openai/gpt-4o",
            "GPT-4o",
            "gpt-4o-2099-01-01",
            "gpt-4o-latest-2099-01-01",
        ] {
            let c = call("openai", model, [10, 1, 0, 0, 0], ServiceTier::Standard);
            let (entry, _) = priced(&catalogue, &c);
            assert!(entry.starts_with("gpt-4o"), "{model} → {entry}");
        }
        let unknown = call(
            "openai",
            "gpt-imaginary-9",
            [10, 1, 0, 0, 0],
            ServiceTier::Standard,
        );
        assert_eq!(
            catalogue.price(&unknown).unwrap(),
            Pricing::Unpriced {
                reason: "no catalogue entry for provider \"openai\" model \"gpt-imaginary-9\""
                    .into()
            }
        );
        assert_eq!(
            candidates(
                "aws.bedrock",
                "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
            )[..2],
            [
                "us.anthropic.claude-3-5-sonnet-20240620-v1:0".to_string(),
                "bedrock/us.anthropic.claude-3-5-sonnet-20240620-v1:0".to_string()
            ]
        );
        assert!(candidates(
            "aws.bedrock",
            "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
        )
        .contains(&"bedrock/anthropic.claude-3-5-sonnet".to_string()));
    }

    #[test]
    fn overrides_are_effective_dated_and_round_half_to_even() {
        let overrides = vec![
            PriceOverride {
                model: "private-llm".into(),
                effective_from: None,
                effective_to: Some("2026-11-23T10:00:00Z".into()),
                rates: [
                    ("input_cost_per_token".into(), "1.5e-09".parse().unwrap()),
                    ("output_cost_per_token".into(), "2.5e-09".parse().unwrap()),
                ]
                .into(),
            },
            PriceOverride {
                model: "private-llm".into(),
                effective_from: Some("2026-11-23T10:00:00Z".into()),
                effective_to: None,
                rates: [
                    ("input_cost_per_token".into(), "3e-09".parse().unwrap()),
                    ("output_cost_per_token".into(), "3e-09".parse().unwrap()),
                ]
                .into(),
            },
        ];
        let catalogue = Catalogue::shipped().with_overrides(&overrides).unwrap();
        assert!(catalogue
            .version()
            .starts_with("litellm-1.109.1@2026-11-23+overrides-"));
        let mut before = call(
            "private",
            "private-llm",
            [1, 1, 0, 0, 0],
            ServiceTier::Standard,
        );
        before.occurred_at = 1_795_427_999_999_999;
        let (_, terms) = priced(&catalogue, &before);
        assert_eq!(
            (terms.input, terms.output),
            (2, 2),
            "1.5 → 2 and 2.5 → 2, half to even"
        );
        let mut after = before.clone();
        after.occurred_at = 1_795_428_000_000_000;
        assert_eq!(priced(&catalogue, &after).1.total, 6);

        let bad = vec![PriceOverride {
            model: "x".into(),
            effective_from: None,
            effective_to: None,
            rates: [("input_cost_per_tokn".into(), Decimal::ONE)].into(),
        }];
        let err = Catalogue::shipped().with_overrides(&bad).unwrap_err();
        assert!(
            err.contains("pricing.overrides[0] (x): input_cost_per_tokn is not a token rate"),
            "{err}"
        );
    }

    #[test]
    fn catalogue_entries_can_be_effective_dated() {
        let json = r#"{
            "house-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "house-model@2026-11": {"model": "house-model", "effective_from": "2026-11-01T00:00:00Z",
                                    "input_cost_per_token": 2e-06, "output_cost_per_token": 2e-06},
            "house-model@2026-12": {"model": "house-model", "effective_from": "2026-12-01T00:00:00Z",
                                    "effective_to": "2027-01-01T00:00:00Z",
                                    "input_cost_per_token": 3e-06, "output_cost_per_token": 3e-06}
        }"#;
        let catalogue = Catalogue::from_litellm_json(json, "house@1").unwrap();
        let mut c = call(
            "house",
            "house-model",
            [1000, 0, 0, 0, 0],
            ServiceTier::Standard,
        );
        c.occurred_at = 1_790_000_000_000_000; // 2026-09
        assert_eq!(
            priced(&catalogue, &c),
            (
                "house-model".into(),
                CostTerms {
                    input: 1_000_000,
                    total: 1_000_000,
                    ..CostTerms::default()
                }
            )
        );
        c.occurred_at = 1_795_428_000_000_000; // 2026-11-23
        assert_eq!(priced(&catalogue, &c).0, "house-model@2026-11");
        c.occurred_at = 1_797_000_000_000_000; // 2026-12-11
        assert_eq!(priced(&catalogue, &c).1.total, 3_000_000);
        let bad = r#"{"m": {"effective_from": "soon", "input_cost_per_token": 1e-06}}"#;
        let err = Catalogue::from_litellm_json(bad, "x").unwrap_err();
        assert!(
            err.contains("catalogue entry \"m\".effective_from: \"soon\" is not RFC 3339"),
            "{err}"
        );
    }

    #[test]
    fn resolved_spellings_are_bounded_and_give_what_the_candidates_give() {
        let catalogue = Catalogue::shipped();
        let standard = ServiceTier::Standard;
        let mut dated = call("openai", "GPT-4o", [1_000, 100, 0, 0, 0], standard);
        dated.response_model = Some("gpt-4o-2024-08-06".into());
        let first = catalogue.price(&dated).unwrap();
        assert_eq!(catalogue.price(&dated).unwrap(), first, "from the cache");
        assert_eq!(
            catalogue.lookup(&dated).map(|e| e.key.as_str()),
            Some("gpt-4o-2024-08-06")
        );
        // The same characters split differently between the fields are other spellings.
        let odd = call("openai", "gpt-4o", [1, 1, 0, 0, 0], standard);
        let mut split = call("openai", "4o", [1, 1, 0, 0, 0], standard);
        split.response_model = Some("gpt-".into());
        assert!(catalogue.lookup(&odd).is_some());
        assert!(catalogue.lookup(&split).is_none());
        for n in 0..10_000 {
            let unknown = call(
                "openai",
                &format!("no-such-model-{n}"),
                [1, 1, 0, 0, 0],
                standard,
            );
            assert!(matches!(
                catalogue.price(&unknown).unwrap(),
                Pricing::Unpriced { .. }
            ));
            assert!(catalogue.resolved.0.lock().unwrap().len() <= MAX_RESOLVED);
        }
        assert_eq!(
            catalogue.price(&dated).unwrap(),
            first,
            "after the cache started again"
        );
        // Overrides added after a lookup are seen.
        let priced_before = catalogue.lookup(&odd).map(|e| e.key.clone());
        assert_eq!(priced_before.as_deref(), Some("gpt-4o"));
        let overridden = catalogue
            .with_overrides(&[PriceOverride {
                model: "gpt-4o".into(),
                effective_from: None,
                effective_to: None,
                rates: [
                    ("input_cost_per_token".to_string(), "1e-06".parse().unwrap()),
                    (
                        "output_cost_per_token".to_string(),
                        "2e-06".parse().unwrap(),
                    ),
                ]
                .into(),
            }])
            .unwrap();
        assert_eq!(
            overridden.lookup(&odd).map(|e| e.rates.len()),
            Some(2),
            "the override, not the cached catalogue entry"
        );
    }

    fn shipped() -> &'static Catalogue {
        static SHIPPED: std::sync::OnceLock<Catalogue> = std::sync::OnceLock::new();
        SHIPPED.get_or_init(Catalogue::shipped)
    }

    proptest::proptest! {
        /// Whatever the split of tokens: the total is the sum of the terms, no term is
        /// negative, and moving input tokens to cache reads never costs more (for models whose
        /// cache-read rate is below the input rate).
        #[test]
        fn totals_add_up_and_caching_never_costs_more(
            input in 0i64..2_000_000, cached_share in 0u32..=100, output in 0i64..200_000, reasoning_share in 0u32..=100,
            model in proptest::sample::select(vec!["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "o3"]),
            tier in proptest::sample::select(ServiceTier::ALL.to_vec()),
        ) {
            let catalogue = shipped();
            let cached = input * cached_share as i64 / 100;
            let reasoning = output * reasoning_share as i64 / 100;
            let with_cache = call("openai", model, [input, output, cached, 0, reasoning], tier);
            let without = call("openai", model, [input, output, 0, 0, reasoning], tier);
            let (_, terms) = priced(catalogue, &with_cache);
            proptest::prop_assert_eq!(terms.total, terms.input + terms.cache_read + terms.cache_write + terms.output + terms.reasoning);
            proptest::prop_assert!([terms.input, terms.cache_read, terms.cache_write, terms.output, terms.reasoning].iter().all(|t| *t >= 0));
            let (_, uncached) = priced(catalogue, &without);
            proptest::prop_assert!(terms.total <= uncached.total + 5, "{} > {}", terms.total, uncached.total);
        }
    }

    #[test]
    fn inconsistent_tokens_are_an_error_not_a_price() {
        let c = call("openai", "gpt-4o", [10, 1, 11, 0, 0], ServiceTier::Standard);
        assert!(Catalogue::shipped().price(&c).is_err());
    }
}
