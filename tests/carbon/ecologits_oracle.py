#!/usr/bin/env python3
"""EcoLogits as an oracle: reads JSON cases on stdin, prints each case's request energy.

Input: [{"provider": "openai", "model": "gpt-4o", "output_tokens": 500, "latency_s": 10.0}, ...]
Output: [{"min_wh": ..., "max_wh": ...}, ...] from ecologits.tracers.utils.llm_impacts
(EcoLogits' own model data, provider PUE, world electricity mix).
"""
import json
import sys

from ecologits.tracers.utils import llm_impacts


def wh_range(value):
    if hasattr(value, "min"):
        return value.min * 1000, value.max * 1000
    return value * 1000, value * 1000


def main() -> int:
    out = []
    for case in json.load(sys.stdin):
        impacts = llm_impacts(case["provider"], case["model"], case["output_tokens"], case["latency_s"], "WOR")
        if impacts.has_errors:
            out.append({"error": str(impacts.errors)})
            continue
        low, high = wh_range(impacts.energy.value)
        out.append({"min_wh": low, "max_wh": high})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
