#!/usr/bin/env bash
# One lent-GPU session (the device tool): train the whole demo model and bring it back as split tar parts.
#   bash training/gpu_session.sh OUT_DIR [BUDGET_SECONDS]
# Expects the diffusers wheel the studio pins in .whl/ (the GPU image has torch, transformers and the rest).
set -u
OUTDIR=${1:?output folder}
BUDGET=${2:-480}
WORK=/tmp/gpu-run
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, torch.cuda.is_available())"
rm -rf "$WORK"
# Optional (BENCH=1), beside the training, whose GPU use is small and launch-bound: the real-size multi-shot
# benchmark (random weights of Wan2.1-1.3B's transformer, 480p, 81 frames), bounded by BENCH_SECONDS.
if [ -n "${BENCH:-}" ]; then
    timeout "${BENCH_SECONDS:-420}" python3 -m bench.multishot --preset wan2.1-t2v-1.3b --random-weights \
        --max-shots "${BENCH_SHOTS:-2}" > "$OUTDIR/bench_multishot.txt" 2>&1 &
    BENCH_PID=$!
fi
python3 -m training.train_gpu all --out "$WORK" --device "${DEVICE:-cuda}" --budget-seconds "$BUDGET" ${EXTRA:-} \
    --text-encoder assets/demo/text_encoder 2>&1 | grep --line-buffered -v -e "Loading weights" -e "Writing model" | tee "$OUTDIR/train.log"
if [ -n "${BENCH_PID:-}" ]; then wait "$BENCH_PID"; echo "benchmark exit $?" >> "$OUTDIR/bench_multishot.txt"; fi
cd "$WORK" || exit 1
if [ -d demo ]; then
    tar czf /tmp/result.tar.gz demo report.json run/latent_stats.json
else
    echo "no export: bringing back the autoencoder checkpoints"
    tar czf /tmp/result.tar.gz $(ls vae_joint.pt vae_decoder.pt run/latent_stats.json 2>/dev/null)
fi
split -b 15M /tmp/result.tar.gz "$OUTDIR/result.tar.gz.part-"
ls -la "$OUTDIR"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
