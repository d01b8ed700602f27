//! Energy and CO2e of a call: energy (Wh per token) × grid intensity (g CO2e per kWh).
//!
//! Method `simple` (the default):
//!
//! ```text
//! energy_wh = (input_tokens × wh_per_input_token + output_tokens × wh_per_output_token) × pue
//! co2e_g    = energy_wh / 1000 × grid_g_per_kwh
//! ```
//!
//! with low / central / high values. `wh_per_output_token` is per model, derived from the
//! EcoLogits 0.11 methodology (see `data/README.md`); a model the table does not know gets a
//! size class (configurable, `unknown` by default: small / medium / large as low / central /
//! high). `wh_per_input_token` is `input_token_energy_ratio` × the output figure: EcoLogits
//! ignores input tokens, and prefill processes them in parallel, far cheaper per token than
//! decoding; the ratio is tally's assumption and configurable. `pue` is per provider (EcoLogits'
//! provider figures), or configured. `wh_per_1k_tokens` replaces all of it with one all-in
//! figure (PUE included) for every token.
//!
//! Grid intensity: the hourly feed's value for the call's region and hour, else the region's
//! annual mean (shipped dataset), else the world mean; which one was used is recorded.
//! Energy is kept in integer micro-watt-hours and CO2e in integer micrograms, each rounded
//! once, half to even, from the exact product.
use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tally_contract::records::{LlmCall, Micros};

use crate::decimal::Decimal;
use crate::pricing::candidates;

const SHIPPED_COEFFICIENTS: &str = include_str!("../data/energy_coefficients.csv");
const SHIPPED_GRID: &str = include_str!("../data/grid_intensity.csv");
/// Version of the shipped energy coefficients.
pub const COEFFICIENTS_VERSION: &str = "ecologits-0.11.3-derived@2026-11-23";
/// Version of the shipped annual grid dataset.
pub const GRID_DATASET_VERSION: &str = "codecarbon-3.3.2-annual@2026-11-23";
/// Version of the `simple` method's formula.
pub const SIMPLE_METHOD_VERSION: &str = "simple-1";
/// Version of the `ecologits` method: EcoLogits 0.11's request energy model.
pub const ECOLOGITS_METHOD_VERSION: &str = "ecologits-0.11";

const MICROS_PER_HOUR: Micros = 3_600_000_000;

/// Carbon settings of the processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarbonConfig {
    /// Energy method: `simple` or `ecologits`.
    #[serde(default = "default_method")]
    pub method: String,
    /// One all-in figure for every token, Wh per 1,000 tokens (PUE included); replaces the
    /// per-model coefficients, the input ratio and the PUE.
    #[serde(default)]
    pub wh_per_1k_tokens: Option<Decimal>,
    /// One grid intensity for every call, g CO2e per kWh; replaces the datasets.
    #[serde(default)]
    pub grid_g_per_kwh: Option<Decimal>,
    /// Grid intensity when a call's region is unknown to the datasets, g CO2e per kWh.
    /// Default: the shipped dataset's generation-weighted world mean (lifecycle).
    #[serde(default)]
    pub world_g_per_kwh: Option<Decimal>,
    /// Energy of an input token as a share of an output token's, low / central / high.
    #[serde(default = "default_input_ratio")]
    pub input_token_energy_ratio: [Decimal; 3],
    /// Data-centre PUE for every provider, replacing the per-provider figures.
    #[serde(default)]
    pub pue: Option<Decimal>,
    /// Size class (`small`, `medium`, `large`, `unknown`) of models the table lacks, by model.
    #[serde(default)]
    pub size_classes: HashMap<String, String>,
    /// An hourly grid-intensity CSV in Electricity Maps' export shape (`Datetime (UTC)`,
    /// `Zone Id`, `Carbon Intensity gCO₂eq/kWh (LCA)`).
    #[serde(default)]
    pub hourly_csv: Option<PathBuf>,
}

fn default_method() -> String {
    "simple".to_string()
}

fn default_input_ratio() -> [Decimal; 3] {
    [
        "0.02".parse().unwrap(),
        "0.05".parse().unwrap(),
        "0.1".parse().unwrap(),
    ]
}

impl Default for CarbonConfig {
    fn default() -> Self {
        CarbonConfig {
            method: default_method(),
            wh_per_1k_tokens: None,
            grid_g_per_kwh: None,
            world_g_per_kwh: None,
            input_token_energy_ratio: default_input_ratio(),
            pue: None,
            size_classes: HashMap::new(),
            hourly_csv: None,
        }
    }
}

/// Where a call's grid intensity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridSource {
    Hourly,
    Annual,
    World,
    Configured,
}

impl GridSource {
    pub fn as_str(self) -> &'static str {
        match self {
            GridSource::Hourly => "hourly",
            GridSource::Annual => "annual",
            GridSource::World => "world",
            GridSource::Configured => "configured",
        }
    }
}

/// The carbon figures of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonEstimate {
    pub energy_uwh: [i64; 3],
    pub co2e_ug: [i64; 3],
    pub grid_g_per_kwh: Decimal,
    pub grid_source: GridSource,
    pub grid_dataset_version: String,
    pub method: &'static str,
    pub method_version: String,
}

/// What the shipped table knows of one model (EcoLogits 0.11 estimates).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParams {
    /// IT energy per output token, Wh, low / central / high (the `simple` method).
    pub wh_per_output_token: [Decimal; 3],
    /// Active parameters, billions, low and high.
    pub active_b: (f64, f64),
    /// Total parameters, billions, low and high.
    pub total_b: (f64, f64),
    /// Measured tokens per second, if known.
    pub tps: Option<f64>,
    /// Measured time to first token, seconds, if known.
    pub ttft: Option<f64>,
}

/// The coefficient tables and grid data, loaded once.
#[derive(Debug, Clone)]
pub struct CarbonModel {
    config: CarbonConfig,
    coefficients: HashMap<String, ModelParams>,
    annual: HashMap<String, Decimal>,
    hourly: HashMap<(String, Micros), Decimal>,
    world: Decimal,
    grid_version: String,
    method_version: String,
}

impl CarbonModel {
    /// Loads the shipped tables and the configured feed; errors name the setting or the line.
    pub fn new(config: CarbonConfig) -> Result<CarbonModel, String> {
        if config.method != "simple" && config.method != "ecologits" {
            return Err(format!(
                "carbon.method {:?} is not simple or ecologits",
                config.method
            ));
        }
        if config.method == "ecologits" && config.wh_per_1k_tokens.is_some() {
            return Err(
                "carbon.wh_per_1k_tokens belongs to the simple method, not ecologits".into(),
            );
        }
        let coefficients = load_coefficients(SHIPPED_COEFFICIENTS)?;
        let annual = load_annual(SHIPPED_GRID)?;
        let world = match config.world_g_per_kwh {
            Some(world) => world,
            None => *annual
                .get("world")
                .ok_or("the shipped grid dataset has no WORLD row")?,
        };
        for class in config.size_classes.values() {
            if !coefficients.contains_key(&format!("class:{class}")) {
                return Err(format!(
                    "carbon.size_classes: {class:?} is not small, medium, large or unknown"
                ));
            }
        }
        let (hourly, hourly_version) = match &config.hourly_csv {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("carbon.hourly_csv {}: {e}", path.display()))?;
                let hourly = load_hourly(&text)
                    .map_err(|e| format!("carbon.hourly_csv {}: {e}", path.display()))?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (hourly, Some(format!("hourly:{name}")))
            }
            None => (HashMap::new(), None),
        };
        let grid_version = match (&config.grid_g_per_kwh, hourly_version) {
            (Some(g), _) => format!("configured:{g}g/kWh"),
            (None, Some(hourly)) => format!("{hourly}+{GRID_DATASET_VERSION}"),
            (None, None) => GRID_DATASET_VERSION.to_string(),
        };
        let method_version = match (config.method.as_str(), config.wh_per_1k_tokens) {
            ("ecologits", _) => format!("{ECOLOGITS_METHOD_VERSION}+{COEFFICIENTS_VERSION}"),
            (_, Some(wh)) => format!("{SIMPLE_METHOD_VERSION}+configured:{wh}Wh/1k-tokens"),
            (_, None) => format!("{SIMPLE_METHOD_VERSION}+{COEFFICIENTS_VERSION}"),
        };
        Ok(CarbonModel {
            config,
            coefficients,
            annual,
            hourly,
            world,
            grid_version,
            method_version,
        })
    }

    /// What the table knows of a call's model, or its size class.
    fn params(&self, call: &LlmCall) -> &ModelParams {
        let models = call
            .response_model
            .iter()
            .chain(std::iter::once(&call.model));
        for model in models {
            if let Some(class) = self.config.size_classes.get(model) {
                return &self.coefficients[&format!("class:{class}")];
            }
            for candidate in candidates(&call.provider, model) {
                if let Some(found) = self.coefficients.get(&candidate) {
                    return found;
                }
            }
        }
        &self.coefficients["class:unknown"]
    }

    fn pue(&self, provider: &str) -> [Decimal; 3] {
        if let Some(pue) = self.config.pue {
            return [pue; 3];
        }
        // EcoLogits 0.11 provider figures (ecologits/tracers/utils.py); others as OpenAI's.
        let canonical = crate::provider::lookup(provider).map(|p| p.name);
        let (low, high) = match canonical {
            Some("anthropic" | "aws.bedrock" | "huggingface") => ("1.09", "1.14"),
            Some("gcp.gemini" | "gcp.vertex_ai" | "gcp.gen_ai" | "cohere") => ("1.09", "1.09"),
            Some("mistral_ai") => ("1.16", "1.16"),
            _ => ("1.2", "1.2"),
        };
        let (low, high): (Decimal, Decimal) = (
            low.parse().expect("literal"),
            high.parse().expect("literal"),
        );
        let central = low
            .checked_add(high)
            .and_then(|sum| sum.checked_mul("0.5".parse().expect("literal")));
        [low, central.unwrap_or(low), high]
    }

    /// The grid intensity for a call's region at its hour, and where it came from.
    pub fn grid(&self, region: Option<&str>, at: Micros) -> (Decimal, GridSource) {
        if let Some(configured) = self.config.grid_g_per_kwh {
            return (configured, GridSource::Configured);
        }
        let Some(region) = region.map(str::to_lowercase) else {
            return (self.world, GridSource::World);
        };
        let hour = at.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
        if let Some(value) = self.hourly.get(&(region.clone(), hour)) {
            return (*value, GridSource::Hourly);
        }
        match self.annual.get(&region) {
            Some(value) => (*value, GridSource::Annual),
            None => (self.world, GridSource::World),
        }
    }

    /// Energy and CO2e of one call.
    pub fn estimate(&self, call: &LlmCall) -> Result<CarbonEstimate, String> {
        let (grid, grid_source) = self.grid(call.region.as_deref(), call.occurred_at);
        let input = Decimal::from_int(call.input_tokens);
        let output = Decimal::from_int(call.output_tokens);
        let energies_wh: [Decimal; 3] = match self.config.wh_per_1k_tokens {
            Some(wh_per_1k) => {
                let per_token = wh_per_1k.shift_down(3).map_err(|e| e.to_string())?;
                let tokens = input.checked_add(output).map_err(|e| e.to_string())?;
                [tokens.checked_mul(per_token).map_err(|e| e.to_string())?; 3]
            }
            None if self.config.method == "ecologits" => {
                let pue = self.pue(&call.provider).map(Decimal::to_f64);
                let params = self.params(call);
                let latency = call.latency_ms.map(|ms| ms as f64 / 1000.0);
                let wh = ecologits_energy_wh(params, call.output_tokens as f64, latency, pue);
                let mut energies = [Decimal::ZERO; 3];
                for i in 0..3 {
                    // The model is in floating point (it has exponentials); its result is kept
                    // to a nano-watt-hour before the exact steps that follow.
                    energies[i] = Decimal::new((wh[i] * 1e9).round() as i128, 9);
                }
                energies
            }
            None => {
                let out_wh = self.params(call).wh_per_output_token;
                let pue = self.pue(&call.provider);
                let ratio = self.config.input_token_energy_ratio;
                let mut energies = [Decimal::ZERO; 3];
                for i in 0..3 {
                    let in_wh = out_wh[i].checked_mul(ratio[i]).map_err(|e| e.to_string())?;
                    energies[i] = input
                        .checked_mul(in_wh)
                        .and_then(|a| output.checked_mul(out_wh[i]).and_then(|b| a.checked_add(b)))
                        .and_then(|it| it.checked_mul(pue[i]))
                        .map_err(|e| e.to_string())?;
                }
                energies
            }
        };
        let mut energy_uwh = [0; 3];
        let mut co2e_ug = [0; 3];
        for i in 0..3 {
            energy_uwh[i] = energies_wh[i].round_scaled(6).map_err(|e| e.to_string())?;
            // g = Wh / 1000 × g/kWh; µg = g × 10^6, so µg = Wh × g/kWh × 10^3.
            co2e_ug[i] = energies_wh[i]
                .checked_mul(grid)
                .and_then(|g| g.round_scaled(3))
                .map_err(|e| e.to_string())?;
        }
        Ok(CarbonEstimate {
            energy_uwh,
            co2e_ug,
            grid_g_per_kwh: grid,
            grid_source,
            grid_dataset_version: self.grid_version.clone(),
            method: if self.config.method == "ecologits" {
                "ecologits"
            } else {
                "simple"
            },
            method_version: self.method_version.clone(),
        })
    }
}

fn load_coefficients(text: &str) -> Result<HashMap<String, ModelParams>, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut out = HashMap::new();
    for (line, row) in reader.records().enumerate() {
        let at = |e: String| format!("energy_coefficients.csv line {}: {e}", line + 2);
        let row = row.map_err(|e| at(e.to_string()))?;
        let decimal =
            |i: usize| -> Result<Decimal, String> { row.get(i).unwrap_or("").parse().map_err(at) };
        let float = |i: usize| -> Result<f64, String> {
            row.get(i)
                .unwrap_or("")
                .parse()
                .map_err(|e: std::num::ParseFloatError| at(e.to_string()))
        };
        let optional = |i: usize| row.get(i).and_then(|v| v.parse::<f64>().ok());
        let params = ModelParams {
            wh_per_output_token: [decimal(5)?, decimal(6)?, decimal(7)?],
            active_b: (float(2)?, float(3)?),
            total_b: (float(8)?, float(4)?),
            tps: optional(9),
            ttft: optional(10),
        };
        // Keep the first row for a name (the table lists models before their aliases).
        out.entry(row.get(0).unwrap_or("").to_lowercase())
            .or_insert(params);
    }
    Ok(out)
}

// EcoLogits 0.11 constants (ecologits/impacts/llm.py).
const GPU_ENERGY_ALPHA: f64 = 1.1665273170451914e-06;
const GPU_ENERGY_BETA: f64 = -0.011205921025579175;
const GPU_ENERGY_GAMMA: f64 = 4.052928146734005e-05;
const LATENCY_ALPHA: f64 = 0.0006785088094353663;
const LATENCY_BETA: f64 = 0.0003119310311688259;
const LATENCY_GAMMA: f64 = 0.019473717579473387;
const GPU_MEMORY_GB: f64 = 80.0;
const SERVER_GPUS: f64 = 8.0;
const SERVER_POWER_KW: f64 = 1.2;
const BATCH_SIZE: f64 = 64.0;

/// EcoLogits 0.11's request energy, Wh, low / central / high: GPU energy of the output tokens
/// from the active parameters, the server's share over the generation latency (the measured
/// request latency when shorter), GPUs from the memory the total parameters need, × PUE.
/// Input tokens are not part of EcoLogits' model.
pub fn ecologits_energy_wh(
    params: &ModelParams,
    output_tokens: f64,
    request_latency: Option<f64>,
    pue: [f64; 3],
) -> [f64; 3] {
    let one = |active: f64, total: f64, pue: f64| -> f64 {
        let gpu_kwh_per_token = (GPU_ENERGY_ALPHA * (GPU_ENERGY_BETA * BATCH_SIZE).exp() * active
            + GPU_ENERGY_GAMMA)
            / 1000.0;
        let gpu_kwh = output_tokens * gpu_kwh_per_token;
        let latency_per_token = match params.tps {
            Some(tps) => 1.0 / tps,
            None => LATENCY_ALPHA * active + LATENCY_BETA * BATCH_SIZE + LATENCY_GAMMA,
        };
        let gpu_latency = output_tokens * latency_per_token + params.ttft.unwrap_or(0.0);
        let latency = request_latency.map_or(gpu_latency, |measured| measured.min(gpu_latency));
        let memory = 1.2 * total * 16.0 / 8.0;
        let gpus = 2f64.powf((memory / GPU_MEMORY_GB).ceil().log2().ceil());
        let server_kwh = latency / 3600.0 * SERVER_POWER_KW * (gpus / SERVER_GPUS) / BATCH_SIZE;
        pue * (server_kwh + gpus * gpu_kwh) * 1000.0
    };
    let (active_low, active_high) = params.active_b;
    let (total_low, total_high) = params.total_b;
    [
        one(active_low, total_low, pue[0]),
        one(
            (active_low + active_high) / 2.0,
            (total_low + total_high) / 2.0,
            pue[1],
        ),
        one(active_high, total_high, pue[2]),
    ]
}

fn load_annual(text: &str) -> Result<HashMap<String, Decimal>, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut out = HashMap::new();
    for (line, row) in reader.records().enumerate() {
        let row = row.map_err(|e| format!("grid_intensity.csv line {}: {e}", line + 2))?;
        let value = row
            .get(1)
            .unwrap_or("")
            .parse()
            .map_err(|e| format!("grid_intensity.csv line {}: {e}", line + 2))?;
        out.entry(row.get(0).unwrap_or("").to_lowercase())
            .or_insert(value);
    }
    Ok(out)
}

/// Reads an hourly feed: Electricity Maps' export columns, or `zone,datetime,carbon_intensity`.
pub fn load_hourly(text: &str) -> Result<HashMap<(String, Micros), Decimal>, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        })
    };
    let zone = find(&["Zone Id", "zone"]).ok_or("no zone column (\"Zone Id\" or \"zone\")")?;
    let datetime = find(&["Datetime (UTC)", "datetime"])
        .ok_or("no datetime column (\"Datetime (UTC)\" or \"datetime\")")?;
    let intensity = find(&["Carbon Intensity gCO₂eq/kWh (LCA)", "Carbon intensity gCO₂eq/kWh (Life cycle)", "carbon_intensity"])
        .or_else(|| find(&["Carbon Intensity gCO₂eq/kWh (direct)"]))
        .ok_or("no carbon intensity column (\"Carbon Intensity gCO₂eq/kWh (LCA)\" or \"carbon_intensity\")")?;
    let mut out = HashMap::new();
    for (line, row) in reader.records().enumerate() {
        let at = |what: &str| format!("line {}: {what}", line + 2);
        let row = row.map_err(|e| at(&e.to_string()))?;
        let text = row.get(datetime).unwrap_or("").trim();
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .or_else(|_| {
                    let with_zone = format!("{}Z", text.replace(' ', "T"));
                    time::OffsetDateTime::parse(
                        &with_zone,
                        &time::format_description::well_known::Rfc3339,
                    )
                })
                .map_err(|_| at(&format!("{text:?} is not a date-time")))?;
        let micros = (parsed.unix_timestamp_nanos() / 1_000) as Micros;
        let hour = micros.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR;
        let value: Decimal = row
            .get(intensity)
            .unwrap_or("")
            .trim()
            .parse()
            .map_err(|e: String| at(&e))?;
        out.insert(
            (row.get(zone).unwrap_or("").trim().to_lowercase(), hour),
            value,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn call(
        provider: &str,
        model: &str,
        input: i64,
        output: i64,
        region: Option<&str>,
    ) -> LlmCall {
        let mut call = LlmCall::new("e", 1_795_428_000_000_000, "acme", "t", provider, model);
        call.input_tokens = input;
        call.output_tokens = output;
        call.region = region.map(String::from);
        call
    }

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn sixty_trillion_tokens_at_2_wh_per_1k_and_480_g_is_120_gwh_and_57600_t() {
        let model = CarbonModel::new(CarbonConfig {
            wh_per_1k_tokens: Some(d("2")),
            grid_g_per_kwh: Some(d("480")),
            ..CarbonConfig::default()
        })
        .unwrap();
        // 60 trillion tokens as 60 million calls of 1,000,000 tokens: each call exactly
        // 2,000 Wh and 960 g, so the sums are exact.
        let one = model
            .estimate(&call("openai", "gpt-4o", 600_000, 400_000, None))
            .unwrap();
        assert_eq!(one.energy_uwh, [2_000_000_000; 3]);
        assert_eq!(one.co2e_ug, [960_000_000; 3]);
        let calls: i128 = 60_000_000;
        let total_wh = calls * one.energy_uwh[1] as i128 / 1_000_000;
        let total_t = calls * one.co2e_ug[1] as i128 / 1_000_000_000_000;
        assert_eq!(total_wh, 120_000_000_000, "120 GWh");
        assert_eq!(total_t, 57_600, "57,600 t CO2e");
        assert_eq!(one.grid_source, GridSource::Configured);
        assert_eq!(one.method_version, "simple-1+configured:2Wh/1k-tokens");
    }

    #[test]
    fn per_model_coefficients_pue_and_input_ratio_by_hand() {
        let model = CarbonModel::new(CarbonConfig::default()).unwrap();
        // gpt-4o: 1.190102e-03 / 1.590969e-03 / 1.991836e-03 Wh per output token; OpenAI PUE 1.2;
        // input ratio 0.02 / 0.05 / 0.1; DEU annual 380.950 g/kWh.
        let estimate = model
            .estimate(&call("openai", "gpt-4o", 10_000, 1_000, Some("DE")))
            .unwrap();
        // central: (10,000 × 1.590969e-03 × 0.05 + 1,000 × 1.590969e-03) × 1.2 = 2.8637442 Wh
        assert_eq!(estimate.energy_uwh[1], 2_863_744);
        // 2.8637442 Wh × 380.950 g/kWh / 1000 = 1.090943... g → µg, half to even
        assert_eq!(estimate.co2e_ug[1], 1_090_943);
        assert_eq!(estimate.energy_uwh[0], 1_713_747); // (10,000×1.190102e-03×0.02 + 1,190.102e-03)×1.2
        assert!(estimate.energy_uwh[2] > estimate.energy_uwh[1]);
        assert_eq!(
            (estimate.grid_source, estimate.grid_g_per_kwh),
            (GridSource::Annual, d("380.95"))
        );
        assert_eq!(
            estimate.method_version,
            "simple-1+ecologits-0.11.3-derived@2026-11-23"
        );
    }

    #[test]
    fn grid_falls_back_from_hourly_to_annual_to_world() {
        let dir = std::env::temp_dir().join(format!("tally-hourly-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("DE_2026_hourly.csv");
        std::fs::write(
            &path,
            "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage\n\
             2026-11-23 10:00:00,Germany,\"Germany\",DE,290.5,321.25,55\n",
        )
        .unwrap();
        let model = CarbonModel::new(CarbonConfig {
            hourly_csv: Some(path),
            ..CarbonConfig::default()
        })
        .unwrap();
        let at = 1_795_428_000_000_000 + 59 * 60 * 1_000_000; // 10:59 UTC
        assert_eq!(
            model.grid(Some("de"), at),
            (d("321.25"), GridSource::Hourly)
        );
        assert_eq!(
            model.grid(Some("DE"), at + 60 * 1_000_000),
            (d("380.95"), GridSource::Annual),
            "11:00 is another hour"
        );
        assert_eq!(
            model.grid(Some("europe-west4"), at),
            (d("236"), GridSource::Annual)
        );
        assert_eq!(
            model.grid(Some("mars-north-1"), at),
            (d("480.617"), GridSource::World)
        );
        assert_eq!(model.grid(None, at), (d("480.617"), GridSource::World));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_models_use_a_size_class_and_bad_settings_are_named() {
        let model = CarbonModel::new(CarbonConfig {
            size_classes: [("my-private-7b".to_string(), "small".to_string())].into(),
            ..CarbonConfig::default()
        })
        .unwrap();
        let unknown = model
            .estimate(&call("acme", "mystery", 0, 1000, None))
            .unwrap();
        let small = model
            .estimate(&call("acme", "my-private-7b", 0, 1000, None))
            .unwrap();
        // class:unknown spans small..large; a known-small model has one value.
        assert!(
            unknown.energy_uwh[0] < unknown.energy_uwh[1]
                && unknown.energy_uwh[1] < unknown.energy_uwh[2]
        );
        assert_eq!(small.energy_uwh[0], small.energy_uwh[2]);
        assert_eq!(small.energy_uwh[1], 89_153, "1000 × 7.429382e-05 Wh × 1.2");
        let err = CarbonModel::new(CarbonConfig {
            method: "guess".into(),
            ..CarbonConfig::default()
        })
        .unwrap_err();
        assert!(
            err.contains("carbon.method \"guess\" is not simple or ecologits"),
            "{err}"
        );
        let err = CarbonModel::new(CarbonConfig {
            size_classes: [("x".to_string(), "huge".to_string())].into(),
            ..CarbonConfig::default()
        })
        .unwrap_err();
        assert!(
            err.contains("\"huge\" is not small, medium, large or unknown"),
            "{err}"
        );
    }
}
