#!/usr/bin/env bash
# Issue 18, one device call (<= 600 s): does SD's factor 8 at 128 px make PID act on the
# miniature's encoder as on SD, and does that buy the smoke tier power?
#   1. training/sweep_miniature.py: factor-8 VAE candidates at 128 px (+ the 64-px B-hf
#      control), trained side by side for the same time box, probed (PID reach on log σ², μ,
#      decode); the UNet of `tiny` trained on the chosen one;
#   2. benchmarks/bench_power.py: the smoke no-attack case on that model at 128 px for 12
#      untuned seeds (pid, random; pid-flipped where time is left), K = 3, on the GPU.
# Run from the repository root on a machine with CUDA, with the wheels in .whl/ (diffusers,
# open_clip, pydantic, piq, ...) when the machine lacks them. Outputs go to $OUT (default /tmp/out).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then pip install -q --no-deps --target /tmp/site .whl/*.whl >"$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"; fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export PROTECTION_AUDIT_CACHE=/tmp/pa-cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python training/sweep_miniature.py --device cuda --deadline-s "${SWEEP_S:-330}" \
    --candidates H-f8-hf,I-f8-deep-hf,J-f8-wide-hf,K-f8-deep,B-hf --choose-among H-f8-hf,I-f8-deep-hf,K-f8-deep \
    --variants tiny --unet-reserve 110 --keep-vaes 2 --work /tmp/ms --out-tar "$OUT/f8.tar.gz" 2>&1 | tee "$OUT/sweep.log"
cp /tmp/ms/sweep.json "$OUT/sweep-f8.json"
if [ -f /tmp/ms/weights/tiny/SHA256SUMS ]; then
    cp -r /tmp/ms/weights/tiny/. audit/models/weights/tiny/
    timeout "${POWER_S:-215}" python benchmarks/bench_power.py --device cuda --parallel 12 --seeds 100-111 \
        --audit-set resolution=128 --results-dir /tmp/bp --out "$OUT/bench-power-f8.json" 2>&1 | grep -v Warning | tee "$OUT/power.log"
fi
