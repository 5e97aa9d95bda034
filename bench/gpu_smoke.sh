#!/bin/bash
# End-to-end smoke on a GPU: one table script per task (row MNIST, PTB, IWSLT'14) with the default accelerator=auto,
# then the kill/resume tests (a SIGKILLed run must resume bit-identical). The GPU check's companion (README, "GPU check").
#   GATEZOO_DATA=../shared/data bash bench/gpu_smoke.sh [OUT_DIR]      # logs in OUT_DIR (default: a temp folder)
# Needs the datasets of those three tasks under $GATEZOO_DATA and gatezoo's requirements installed.
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
export WANDB_MODE=disabled PYTHONUNBUFFERED=1 GATEZOO_RUNS=$OUT/runs GATEZOO_RESULTS=$OUT/results
PY=${PYTHON:-python3}
step() {
  local name=$1; shift; local s=$(date +%s)
  timeout 600 "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  echo "== $name: exit $rc, $(( $(date +%s) - s )) s ($OUT/$name.log)"
  grep -aE "GPU available|final|BLEU|passed|failed|Error" "$OUT/$name.log" | grep -v Warning | tail -n 6
}
step mnist $PY reproduce/table2_simplified.py --preset smoke --cells lstm lstm1
step ptb $PY reproduce/table1_g2lstm.py --preset smoke
step mt $PY reproduce/table2_g2lstm.py --preset smoke
step resume $PY -m pytest -q -x -p no:cacheprovider tests/test_resilience.py -k "killed_run_resumes or killed_translation"
