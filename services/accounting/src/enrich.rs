//! One `LlmCall` → one `EnrichedLlmCall`: its cost from the price catalogue and its energy and
//! CO2e from the carbon model, each with the versions that produced it. Pure: no I/O.
use tally_contract::records::{EnrichedLlmCall, LlmCall, Micros};

use crate::carbon::{CarbonConfig, CarbonModel};
use crate::pricing::{Catalogue, Pricing};
use crate::AccountingError;

/// Why a call cannot be enriched; it goes to the dead-letter topic with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichError(pub String);

/// Prices and carbon-rates calls.
#[derive(Debug, Clone)]
pub struct Enricher {
    catalogue: Catalogue,
    carbon: CarbonModel,
}

impl Enricher {
    /// From a loaded catalogue and carbon settings.
    pub fn new(catalogue: Catalogue, carbon: CarbonConfig) -> Result<Enricher, AccountingError> {
        let carbon = CarbonModel::new(carbon).map_err(AccountingError::Carbon)?;
        Ok(Enricher { catalogue, carbon })
    }

    /// The price catalogue.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The carbon model.
    pub fn carbon(&self) -> &CarbonModel {
        &self.carbon
    }

    /// Enriches one call at `now` (the record's `enriched_at`).
    pub fn enrich(&self, mut call: LlmCall, now: Micros) -> Result<EnrichedLlmCall, EnrichError> {
        // Ingest already stores the canonical name; records from other producers (or from
        // before) may not.
        if crate::provider::lookup(&call.provider).is_some_and(|p| p.name != call.provider) {
            call.provider = crate::provider::canonical(&call.provider);
        }
        let pricing = self.catalogue.price(&call).map_err(|e| EnrichError(e.0))?;
        let carbon = self.carbon.estimate(&call).map_err(EnrichError)?;
        let (unpriced, entry, canonical_model, terms) = match pricing {
            Pricing::Priced {
                entry,
                model,
                terms,
            } => (false, Some(entry), model, Some(terms)),
            Pricing::Unpriced { .. } => (
                true,
                None,
                crate::pricing::canonical_model(&call.model),
                None,
            ),
        };
        Ok(EnrichedLlmCall {
            call,
            enriched_at: now,
            unpriced,
            price_catalogue_version: self.catalogue.version().to_string(),
            price_entry: entry,
            canonical_model,
            cost_input_nanos: terms.map(|t| t.input),
            cost_cache_read_nanos: terms.map(|t| t.cache_read),
            cost_cache_write_nanos: terms.map(|t| t.cache_write),
            cost_output_nanos: terms.map(|t| t.output),
            cost_reasoning_nanos: terms.map(|t| t.reasoning),
            cost_total_nanos: terms.map(|t| t.total),
            energy_uwh_low: carbon.energy_uwh[0],
            energy_uwh_central: carbon.energy_uwh[1],
            energy_uwh_high: carbon.energy_uwh[2],
            grid_g_per_kwh: carbon.grid_g_per_kwh.to_f64(),
            grid_source: carbon.grid_source.as_str().to_string(),
            grid_dataset_version: carbon.grid_dataset_version,
            co2e_ug_low: carbon.co2e_ug[0],
            co2e_ug_central: carbon.co2e_ug[1],
            co2e_ug_high: carbon.co2e_ug[2],
            carbon_method: carbon.method.to_string(),
            carbon_method_version: carbon.method_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_contract::records::{CallStatus, ServiceTier};

    fn call(model: &str) -> LlmCall {
        serde_json::from_value(serde_json::json!({
            "event_id": "e1", "occurred_at": 1_795_428_000_000_000i64, "received_at": 1_795_428_000_000_001i64,
            "tenant": "acme", "team": "payments", "user": null, "service": null, "environment": null,
            "workflow": null, "session_id": null, "agent": null, "step": null, "parent_id": null,
            "trace_id": null, "span_id": null, "provider": "openai", "model": model, "response_model": null,
            "operation": "chat", "region": "us-east-1", "input_tokens": 1000, "output_tokens": 300,
            "cache_read_tokens": 800, "cache_write_tokens": 0, "reasoning_tokens": 200,
            "service_tier": ServiceTier::Standard, "latency_ms": null, "status": CallStatus::Ok,
            "error_type": null, "finish_reason": null, "prompt_fingerprint": null, "tool_name": null,
            "tool_args_fingerprint": null, "ticket_id": null, "reported_cost_micros": null, "tags": {}
        }))
        .unwrap()
    }

    #[test]
    fn a_known_model_is_priced_and_rated_with_versions() {
        let enricher = Enricher::new(Catalogue::shipped(), CarbonConfig::default()).unwrap();
        let enriched = enricher.enrich(call("gpt-4o"), 42).unwrap();
        assert!(!enriched.unpriced);
        assert_eq!(enriched.price_entry.as_deref(), Some("gpt-4o"));
        assert_eq!(enriched.cost_total_nanos, Some(4_500_000));
        assert_eq!(
            enriched.price_catalogue_version,
            "litellm-1.109.1@2026-11-23"
        );
        assert_eq!(
            (enriched.grid_source.as_str(), enriched.grid_g_per_kwh),
            ("annual", 369.473)
        );
        assert_eq!(enriched.carbon_method, "simple");
        assert!(
            enriched.energy_uwh_low < enriched.energy_uwh_central
                && enriched.energy_uwh_central < enriched.energy_uwh_high
        );
        assert_eq!(enriched.enriched_at, 42);
    }

    #[test]
    fn an_unknown_model_is_flagged_with_null_cost_never_zero() {
        let enricher = Enricher::new(Catalogue::shipped(), CarbonConfig::default()).unwrap();
        let enriched = enricher.enrich(call("gpt-imaginary"), 0).unwrap();
        assert!(enriched.unpriced);
        assert_eq!(enriched.price_entry, None);
        assert_eq!(
            [
                enriched.cost_input_nanos,
                enriched.cost_cache_read_nanos,
                enriched.cost_cache_write_nanos,
                enriched.cost_output_nanos,
                enriched.cost_reasoning_nanos,
                enriched.cost_total_nanos
            ],
            [None; 6]
        );
        assert!(
            enriched.energy_uwh_central > 0,
            "carbon still has a size-class estimate"
        );
    }
}
