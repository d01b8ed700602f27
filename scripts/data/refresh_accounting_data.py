#!/usr/bin/env python3
"""Regenerates the accounting data files from the published packages they come from.

    python3 scripts/data/refresh_accounting_data.py WHEEL_DIR

WHEEL_DIR holds the wheels of litellm, codecarbon and ecologits, and pycountry is importable
(`pip download --no-deps -d WHEEL_DIR litellm codecarbon ecologits; pip install pycountry`).
Writes, under services/accounting/data/:

- litellm_model_prices.json  LiteLLM's model_prices_and_context_window_backup.json, as is.
- grid_intensity.csv         annual grid carbon intensity (g CO2e/kWh, lifecycle) by zone:
                             countries (ISO 3166 alpha-3 and alpha-2) from codecarbon's
                             global_energy_mix.json (Our World in Data / Ember, CC-BY 4.0);
                             Google Cloud regions from codecarbon's cloud/impact.csv (Google's
                             published factors); AWS and Azure regions as the country they are
                             in; WORLD as the generation-weighted mean of the countries.
- energy_coefficients.csv    IT energy per output token by model (Wh, low/central/high),
                             derived from EcoLogits 0.11's regressions and model parameter
                             estimates (see services/accounting/data/README.md).
"""
import csv
import json
import math
import pathlib
import sys
import zipfile

import pycountry

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "services" / "accounting" / "data"

# AWS and Azure regions → the country they are in (ISO 3166 alpha-3). Providers publish no
# per-region factor here, so the country's annual mean is used.
CLOUD_REGION_COUNTRY = {
    "us-east-1": "USA", "us-east-2": "USA", "us-west-1": "USA", "us-west-2": "USA",
    "ca-central-1": "CAN", "ca-west-1": "CAN", "sa-east-1": "BRA", "mx-central-1": "MEX",
    "eu-west-1": "IRL", "eu-west-2": "GBR", "eu-west-3": "FRA", "eu-central-1": "DEU",
    "eu-central-2": "CHE", "eu-north-1": "SWE", "eu-south-1": "ITA", "eu-south-2": "ESP",
    "ap-northeast-1": "JPN", "ap-northeast-2": "KOR", "ap-northeast-3": "JPN", "ap-southeast-1": "SGP",
    "ap-southeast-2": "AUS", "ap-southeast-3": "IDN", "ap-southeast-4": "AUS", "ap-south-1": "IND",
    "ap-south-2": "IND", "ap-east-1": "HKG", "me-south-1": "BHR", "me-central-1": "ARE",
    "af-south-1": "ZAF", "il-central-1": "ISR",
    "eastus": "USA", "eastus2": "USA", "westus": "USA", "westus2": "USA", "westus3": "USA",
    "centralus": "USA", "northcentralus": "USA", "southcentralus": "USA", "westcentralus": "USA",
    "canadacentral": "CAN", "canadaeast": "CAN", "brazilsouth": "BRA", "northeurope": "IRL",
    "westeurope": "NLD", "uksouth": "GBR", "ukwest": "GBR", "francecentral": "FRA",
    "germanywestcentral": "DEU", "swedencentral": "SWE", "switzerlandnorth": "CHE",
    "norwayeast": "NOR", "polandcentral": "POL", "italynorth": "ITA", "spaincentral": "ESP",
    "japaneast": "JPN", "japanwest": "JPN", "koreacentral": "KOR", "southeastasia": "SGP",
    "eastasia": "HKG", "australiaeast": "AUS", "australiasoutheast": "AUS", "centralindia": "IND",
    "southindia": "IND", "uaenorth": "ARE", "southafricanorth": "ZAF", "qatarcentral": "QAT",
}

# EcoLogits 0.11 constants (ecologits/impacts/llm.py).
GPU_ENERGY_ALPHA = 1.1665273170451914e-06
GPU_ENERGY_BETA = -0.011205921025579175
GPU_ENERGY_GAMMA = 4.052928146734005e-05
LATENCY_ALPHA = 0.0006785088094353663
LATENCY_BETA = 0.0003119310311688259
LATENCY_GAMMA = 0.019473717579473387
GPU_MEMORY_GB = 80
SERVER_GPUS = 8
SERVER_POWER_KW = 1.2
BATCH_SIZE = 64
QUANTIZATION_BITS = 16


def wheel(directory: pathlib.Path, name: str) -> zipfile.ZipFile:
    found = sorted(directory.glob(f"{name}-*.whl"))
    if not found:
        sys.exit(f"no {name} wheel in {directory}")
    return zipfile.ZipFile(found[-1])


def gpus_for(total_params_b: float) -> int:
    memory = 1.2 * total_params_b * QUANTIZATION_BITS / 8
    return 2 ** math.ceil(math.log2(math.ceil(memory / GPU_MEMORY_GB)))


def wh_per_output_token(active_b: float, total_b: float, tps) -> float:
    """IT energy (no PUE) of one output token, EcoLogits' GPU and server terms, in Wh."""
    gpu_wh = GPU_ENERGY_ALPHA * math.exp(GPU_ENERGY_BETA * BATCH_SIZE) * active_b + GPU_ENERGY_GAMMA
    latency = 1 / tps if tps else LATENCY_ALPHA * active_b + LATENCY_BETA * BATCH_SIZE + LATENCY_GAMMA
    gpus = gpus_for(total_b)
    server_wh = latency / 3600 * SERVER_POWER_KW * 1000 * gpus / SERVER_GPUS / BATCH_SIZE
    return gpus * gpu_wh + server_wh


def params(architecture):
    p = architecture["parameters"]
    if architecture["type"] == "dense":
        low, high = (p["min"], p["max"]) if isinstance(p, dict) else (p, p)
        return low, high, low, high
    total = p["total"]
    total_low, total_high = (total["min"], total["max"]) if isinstance(total, dict) else (total, total)
    active = p["active"]
    low, high = (active["min"], active["max"]) if isinstance(active, dict) else (active, active)
    return low, high, total_low, total_high


def energy_rows(ecologits: zipfile.ZipFile):
    models = json.loads(ecologits.read("ecologits/data/models.json"))
    rows = []
    by_name = {}
    for model in models["models"]:
        low_b, high_b, total_low, total_high = params(model["architecture"])
        tps = (model.get("deployment") or {}).get("tps")  # measured tokens/s, if EcoLogits has it
        low = wh_per_output_token(low_b, total_low, tps)
        high = wh_per_output_token(high_b, total_high, tps)
        central = wh_per_output_token((low_b + high_b) / 2, (total_low + total_high) / 2, tps)
        deployment = model.get("deployment") or {}
        row = [model["name"], model["provider"], low_b, high_b, total_high, f"{low:.6e}", f"{central:.6e}", f"{high:.6e}",
               total_low, deployment.get("tps") or "", deployment.get("ttft") or ""]
        rows.append(row)
        by_name[(model["provider"], model["name"])] = row
    # Size classes, for models the table does not know: (active, total) billions of parameters.
    classes = {"small": (8, 8), "medium": (70, 70), "large": (200, 1000)}
    centrals = {}
    for name, (active, total) in classes.items():
        centrals[name] = wh_per_output_token(active, total, None)
        rows.append([f"class:{name}", "tally", active, active, total] + [f"{centrals[name]:.6e}"] * 3 + [total, "", ""])
    rows.append(["class:unknown", "tally", 8, 200, 1000,
                 f"{centrals['small']:.6e}", f"{centrals['medium']:.6e}", f"{centrals['large']:.6e}", 8, "", ""])
    for alias in models["aliases"]:
        target = by_name.get((alias["provider"], alias["alias"])) or by_name.get((alias["provider"], alias["name"]))
        if target and alias["name"] != target[0]:
            rows.append([alias["name"]] + target[1:])
    return rows


def main() -> int:
    wheels = pathlib.Path(sys.argv[1])
    litellm = wheel(wheels, "litellm")
    (DATA / "litellm_model_prices.json").write_bytes(litellm.read("litellm/model_prices_and_context_window_backup.json"))

    codecarbon = wheel(wheels, "codecarbon")
    mix = json.loads(codecarbon.read("codecarbon/data/private_infra/global_energy_mix.json"))
    rows = []
    weighted, generation = 0.0, 0.0
    for iso3, country in sorted(mix.items()):
        intensity, year = country["carbon_intensity"], country.get("year", "")
        source = "codecarbon global_energy_mix (Our World in Data / Ember, CC-BY 4.0)"
        rows.append([iso3, f"{intensity:.3f}", year, source])
        match = pycountry.countries.get(alpha_3=iso3)
        if match is not None:
            rows.append([match.alpha_2, f"{intensity:.3f}", year, source + f", {iso3}"])
        if country.get("total_TWh"):
            weighted += intensity * country["total_TWh"]
            generation += country["total_TWh"]
    world = weighted / generation
    rows.append(["WORLD", f"{world:.3f}", "", "generation-weighted mean of the countries above"])
    impact = csv.DictReader(codecarbon.read("codecarbon/data/cloud/impact.csv").decode("utf-8-sig").splitlines())
    for region in impact:
        rows.append([region["region"], region["impact"], "", f"{region['providerName']} published factor ({region['source']})"])
    by_zone = {row[0]: row for row in rows}
    for region, iso3 in CLOUD_REGION_COUNTRY.items():
        country = by_zone[iso3]
        rows.append([region, country[1], country[2], f"country of the region ({iso3}), {country[3]}"])
    with open(DATA / "grid_intensity.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["zone", "g_co2e_per_kwh", "year", "source"])
        writer.writerows(rows)

    ecologits = wheel(wheels, "ecologits")
    with open(DATA / "energy_coefficients.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["model", "provider", "active_params_b_low", "active_params_b_high", "total_params_b",
                         "wh_per_output_token_low", "wh_per_output_token_central", "wh_per_output_token_high",
                         "total_params_b_low", "tps", "ttft"])
        writer.writerows(energy_rows(ecologits))
    print(f"wrote {DATA}: world mean {world:.1f} g/kWh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
