//! `tally estimate`: the cost, energy and CO2e of a call (or of N tokens at its mix), with the
//! method and data versions, computed by the processor's own code.
use std::path::PathBuf;
use tally_contract::clock::now_micros;

use clap::Args;
use serde_json::json;
use tally_accounting::decimal::Decimal;
use tally_accounting::enrich::Enricher;
use tally_contract::config::load;
use tally_contract::records::{EnrichedLlmCall, LlmCall, ServiceTier};
use tally_processor::ProcessorConfig;

use crate::error::TallyError;

#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// Model as the catalogue or the provider names it (gpt-4o, claude-sonnet-4-5, ...).
    #[arg(long)]
    model: String,
    /// Provider (openai, anthropic, aws.bedrock, gcp.gemini, ...); helps the lookup.
    #[arg(long, default_value = "openai")]
    provider: String,
    /// Input tokens, including cached ones.
    #[arg(long)]
    input_tokens: i64,
    /// Output tokens, including reasoning ones.
    #[arg(long)]
    output_tokens: i64,
    /// Input tokens read from the prompt cache.
    #[arg(long, default_value_t = 0)]
    cache_read_tokens: i64,
    /// Input tokens written to the prompt cache.
    #[arg(long, default_value_t = 0)]
    cache_write_tokens: i64,
    /// Output tokens spent reasoning.
    #[arg(long, default_value_t = 0)]
    reasoning_tokens: i64,
    /// Cloud region or grid zone where inference runs (us-east-1, europe-west4, DE, ...).
    #[arg(long)]
    region: Option<String>,
    /// Service tier: standard, batch, priority, flex.
    #[arg(long, default_value = "standard")]
    service_tier: String,
    /// Energy method: simple.
    #[arg(long)]
    method: Option<String>,
    /// One all-in energy figure for every token, Wh per 1,000 tokens (PUE included).
    #[arg(long)]
    wh_per_1k_tokens: Option<Decimal>,
    /// One grid intensity, g CO2e per kWh.
    #[arg(long)]
    grid_g_per_kwh: Option<Decimal>,
    /// Scale the call to this many tokens in all (same input/output mix).
    #[arg(long)]
    tokens: Option<u64>,
    /// A processor configuration file (price overrides, carbon settings).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EstimateArgs) -> Result<(), TallyError> {
    let mut config: ProcessorConfig = load(args.config.as_deref())?;
    if let Some(method) = &args.method {
        config.carbon.method = method.clone();
    }
    config.carbon.wh_per_1k_tokens = args.wh_per_1k_tokens.or(config.carbon.wh_per_1k_tokens);
    config.carbon.grid_g_per_kwh = args.grid_g_per_kwh.or(config.carbon.grid_g_per_kwh);
    let enricher = Enricher::new(config.catalogue()?, config.carbon.clone())?;
    let service_tier: ServiceTier = args.service_tier.parse().map_err(TallyError::Usage)?;
    let mut call = LlmCall::new(
        "estimate",
        now_micros(),
        "",
        "",
        &args.provider,
        &args.model,
    );
    call.region = args.region.clone();
    call.input_tokens = args.input_tokens;
    call.output_tokens = args.output_tokens;
    call.cache_read_tokens = args.cache_read_tokens;
    call.cache_write_tokens = args.cache_write_tokens;
    call.reasoning_tokens = args.reasoning_tokens;
    call.service_tier = service_tier;
    let enriched = enricher
        .enrich(call, now_micros())
        .map_err(|e| TallyError::Usage(e.0))?;
    let per_call_tokens = (args.input_tokens + args.output_tokens).max(1) as i128;
    let scale = |value: i64| -> i128 {
        match args.tokens {
            // Scaled in integers, rounding half to even at the end.
            Some(tokens) => round_div(value as i128 * tokens as i128, per_call_tokens),
            None => value as i128,
        }
    };
    let report = json!({
        "model": args.model,
        "provider": args.provider,
        "tokens": args.tokens.map_or(per_call_tokens, |t| t as i128).to_string(),
        "scaled_from_one_call": args.tokens.is_some(),
        "unpriced": enriched.unpriced,
        "price_entry": enriched.price_entry,
        "price_catalogue_version": enriched.price_catalogue_version,
        "cost_nanos": enriched.cost_total_nanos.map(|c| scale(c).to_string()),
        "cost_usd": enriched.cost_total_nanos.map(|c| usd(scale(c))),
        "energy_wh": [wh(scale(enriched.energy_uwh_low)), wh(scale(enriched.energy_uwh_central)), wh(scale(enriched.energy_uwh_high))],
        "co2e_g": [grams(scale(enriched.co2e_ug_low)), grams(scale(enriched.co2e_ug_central)), grams(scale(enriched.co2e_ug_high))],
        "grid_g_per_kwh": enriched.grid_g_per_kwh,
        "grid_source": enriched.grid_source,
        "grid_dataset_version": enriched.grid_dataset_version,
        "carbon_method": enriched.carbon_method,
        "carbon_method_version": enriched.carbon_method_version,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
    } else {
        print_text(&enriched, &report);
    }
    Ok(())
}

fn print_text(enriched: &EnrichedLlmCall, report: &serde_json::Value) {
    let text = |key: &str| report[key].as_str().unwrap_or("").to_string();
    println!("tokens      {}", text("tokens"));
    match report["cost_usd"].as_str() {
        Some(usd) => println!(
            "cost        ${usd}  ({} nano-dollars; entry {}; {})",
            text("cost_nanos"),
            enriched.price_entry.as_deref().unwrap_or("?"),
            enriched.price_catalogue_version
        ),
        None => println!(
            "cost        UNKNOWN: the model matched no catalogue entry ({})",
            enriched.price_catalogue_version
        ),
    }
    let triple = |key: &str| -> String {
        let values: Vec<&str> = report[key]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        format!(
            "{} (low {}, high {})",
            values.get(1).unwrap_or(&"?"),
            values.first().unwrap_or(&"?"),
            values.get(2).unwrap_or(&"?")
        )
    };
    println!("energy      {} Wh", triple("energy_wh"));
    println!("co2e        {} g", triple("co2e_g"));
    println!(
        "grid        {} g CO2e/kWh ({}; {})",
        enriched.grid_g_per_kwh, enriched.grid_source, enriched.grid_dataset_version
    );
    println!(
        "method      {} ({})",
        enriched.carbon_method, enriched.carbon_method_version
    );
}

fn round_div(numerator: i128, denominator: i128) -> i128 {
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    match (remainder.abs() * 2).cmp(&denominator) {
        std::cmp::Ordering::Less => quotient,
        std::cmp::Ordering::Greater => quotient + numerator.signum(),
        std::cmp::Ordering::Equal if quotient % 2 == 0 => quotient,
        std::cmp::Ordering::Equal => quotient + numerator.signum(),
    }
}

fn fixed(value: i128, decimals: u32) -> String {
    Decimal::new(value, decimals).to_string()
}

fn usd(nanos: i128) -> String {
    fixed(nanos, 9)
}

fn wh(micro_wh: i128) -> String {
    fixed(micro_wh, 6)
}

fn grams(micrograms: i128) -> String {
    fixed(micrograms, 6)
}
