#!/usr/bin/env bash
# The EcoLogits package, the oracle of the processor's `ecologits` carbon method
# (tests/carbon/ecologits_oracle.py). Prints the venv's python.
exec "$(dirname "$0")/py-venv.sh" ecologits-0.11.3 "ecologits==0.11.3"
