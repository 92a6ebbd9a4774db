#!/usr/bin/env bash
# The GPU checks of stacked training, for a GPU machine whose python3 already has torch and
# Lightning but not the rest: install what it lacks into .devsite from this checkout first,
#   .venv/bin/python -m pip install --target .devsite -c requirements.lock hydra-core omegaconf zuko
# then, on the GPU machine, from the checkout's root:
#   bash scripts/gpu_check.sh [out dir]
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/.devsite:$PWD/src:$PWD/scripts" MDNLAB_LOG_DIR="$OUT/logs" PYTHONWARNINGS=ignore
QUIET='^\[|avail|LOCAL_RANK|max_epochs|Tensor Cores|set_float32|^step '
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
echo "== the noise and shuffles on the GPU: the CPU's stored bits, eager and compiled"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_draws.py -k "gpu or compiled" 2>&1 | tail -3
python3 -c "
import torch
from mdnlab.data import draws
from mdnlab.data.batches import epoch_keys
keys = epoch_keys([(seed, 0, 1) for seed in range(64)], 'cuda')
steps = torch.arange(4, device='cuda')
eager = draws.normals(keys, steps, 2000)
print('compiled == eager on the GPU:', torch.equal(draws.normals(keys, steps, 2000, draws.compiled('cuda')), eager),
      '| GPU == CPU:', torch.equal(eager.cpu(), draws.normals(keys.cpu(), steps.cpu(), 2000)))"
echo "== one model alone through mdnlab on the GPU; stacked step costs on the GPU (eager)"
timeout 100 python3 scripts/bench.py --steps 1000 --repeats 1 --skip-startup --trainer gpu --device cuda \
  --stacked-sizes 1 4 16 64 256 1024 --recipe-sizes 64 1024 --batch-sizes 64 1024 --no-compile --sweep-seeds 0 --out "$OUT/gpu_stacked.json" 2>&1 | grep -Ev "$QUIET"
echo "== trainer=gpu stacked multirun: 64 seeds of the default recipe, 2000 steps"
start=$(date +%s.%N)
timeout 60 python3 -m mdnlab.cli.train -m hydra/launcher=stacked hydra.launcher.compile=false trainer=gpu \
  'seed=range(64)' trainer.max_epochs=2 figures=false > "$OUT/gpu_multirun.log" 2>&1
echo "exit $? after $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
grep -E "Launching|stacked:|epoch 2/2" "$OUT/gpu_multirun.log" | tail -3
ls "$MDNLAB_LOG_DIR"/train/multiruns/*/*/metrics.json 2>/dev/null | wc -l
