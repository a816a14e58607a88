#!/usr/bin/env bash
# Training benchmark on a CUDA GPU (the commands behind the GPU rows of the README).
#
#   bash benchmarks/gpu_open_clip.sh            # from the repository root, venv in .venv
#   PYTHON=python bash benchmarks/gpu_open_clip.sh
#
# 1. open_clip ViT-B-32, random init (no download), synthetic 224 px images and tokenised
#    synthetic captions, batch 256, bf16 autocast: our trainer with contrastive only, + CMA,
#    + CMA and the gradient-aware scheduler (every step / every 10th step), and open_clip's own
#    loop (open_clip_train.train.train_one_epoch) on the same batches. ~5 min on one H100.
# 2. The embedded default's trainable heads on CUDA (cached-feature path), batch 256.
# Results: benchmarks/results/bench_train_cuda_vitb32.csv and bench_train_cuda_towers.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

"$PY" benchmarks/bench_train.py --backend open_clip --model ViT-B-32 --device cuda \
    --amp bf16 --image-size 224 --batch 256 --steps 20 --warmup 3 --repeats 3 \
    --out benchmarks/results/bench_train_cuda_vitb32.csv

"$PY" benchmarks/bench_train.py --backend towers --device cuda --batch 256 \
    --steps 50 --warmup 5 --repeats 3 \
    --out benchmarks/results/bench_train_cuda_towers.csv

# 3. The README's cost table on this GPU: ViT-B-32 per-batch times (bf16, batch 256), written to
#    its CSV, and the README block regenerated with the GPU table beside the CPU one.
"$PY" benchmarks/cost_table.py --device cuda --amp bf16 --batch 256 --update-readme \
    --out benchmarks/results/cost_vitb32_cuda.csv
