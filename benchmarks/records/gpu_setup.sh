# Sourced by the record scripts of GPU calls (call5_gpu.sh on): with `out` (what comes back) and
# `work` (everything else) set, installs the package editable and the carried wheels under .whl/
# (M*, pyzmq, soundfile and its cffi, the cuDNN frontend), records the card in $out/card.txt, and
# defines `pack` (results.tgz of $work, rebuilt after each part) and `costs_part NAME LIMIT [ENV...]`
# (benchmarks/costs_gpu.sh within LIMIT seconds into $work/costs, its summary and model under $out;
# sets `model` to the model's path; NAME is costs_h100.yaml, costs_h200.yaml on an H200).
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$work/install.log" 2>&1 || { cat "$work/install.log"; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/mstar_ai-*.whl .whl/pyzmq-*.whl \
  .whl/soundfile-*.whl .whl/cffi-*.whl .whl/pycparser-*.whl >>"$work/install.log" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-cudnn .whl/nvidia_cudnn_frontend*.whl \
  >>"$work/install.log" 2>&1
export PYTHONPATH=/tmp/site-cudnn:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
costs_name=costs_h100.yaml; grep -q H200 "$out/card.txt" && costs_name=costs_h200.yaml

pack() { tar -czf "$out/results.tgz" -C "$work" . 2>/dev/null; }

costs_part() {  # costs_part LIMIT_S [VAR=VALUE ...]: the cost model on the card (benchmarks/costs_gpu.sh)
  local limit=$1 t0=$SECONDS; shift
  env "$@" COSTS_NAME="$costs_name" OUT="$work/costs" BUDGET="$limit" timeout $((limit + 10)) \
    bash benchmarks/costs_gpu.sh >"$work/costs.log" 2>&1
  echo "== costs: exit $? in $((SECONDS - t0)) s"
  cp "$work/costs/costs_summary.md" "$work/costs/$costs_name" "$out/" 2>/dev/null
  head -n 40 "$out/costs_summary.md" 2>/dev/null
  model=$work/costs/$costs_name
  pack
}
