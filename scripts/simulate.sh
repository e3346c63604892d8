#!/usr/bin/env bash
# make simulate: the rollout-plan scenarios of tests/integration/test_plan_simulation.py on a fleet of
# FLEET devices (default 2,000, stages 1,10,50,100), through the real handler and controller on moto, on a
# simulated clock; prints what each scenario showed. Takes several minutes: moto costs milliseconds a check.
set -euo pipefail
FLEET="${FLEET:-2000}"
PY="${PY:-.venv/bin/python}"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
OTAFLEET_SIM_FLEET="$FLEET" OTAFLEET_SIM_REPORT="$report" "$PY" -m pytest -q -p no:logging \
    tests/integration/test_plan_simulation.py "$@" | grep -v '^{' || { cat "$report"; exit 1; }
"$PY" - "$report" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    print(f"\n== {r.pop('scenario')} ({r.pop('fleet')} devices, stages {r.pop('stages')}) ==")
    for k, v in r.items():
        print(f"  {k:<15} {v}")
PY
