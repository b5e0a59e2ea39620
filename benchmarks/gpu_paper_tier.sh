#!/usr/bin/env bash
# Issue 23, one device call (<= 540 s): one paper-tier exploit run on SD 1.5's architecture
# (random weights, 512 px) through the toolkit's own stages — PID 1000 iterations, DreamBooth
# 1000 steps with prior preservation (200 class images), 60 generations at 50 steps — each
# stage timed at two short sizes and extrapolated (stated per stage in the JSON), with its peak
# GPU memory, and whether the paper tier fits in 24 GB. benchmarks/gpu_paper_tier.py says how.
# Run from the repository root on a machine with CUDA, with the wheels in .whl/ (diffusers,
# open_clip, pydantic, ...) when the machine lacks them. Output: $OUT/gpu-paper-tier.json
# (default OUT=/tmp/out); commit it as benchmarks/results/gpu-paper-tier.json.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then pip install -q --no-deps --target /tmp/site .whl/*.whl >"$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"; fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout "${BENCH_S:-540}" python benchmarks/gpu_paper_tier.py --device cuda \
    --pid-iters "${PID_ITERS:-10,40}" --db-steps "${DB_STEPS:-10,40}" --gen-steps "${GEN_STEPS:-3,9}" \
    --out "$OUT/gpu-paper-tier.json" 2>&1 | grep -v Warning | tee "$OUT/gpu-paper-tier.log"
