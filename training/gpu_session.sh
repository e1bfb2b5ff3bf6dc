#!/usr/bin/env bash
# One call on a GPU machine without internet: train the whole demo model and bring it back as split tar parts.
#   bash training/gpu_session.sh OUT_DIR [BUDGET_SECONDS]               # first call: python -m training.train_gpu all
#   CONTINUE=1 bash training/gpu_session.sh OUT_DIR SECONDS              # a second call on the same warm machine:
#                                                                        # the transformer and decoder go on, re-export
#   VAE_ONLY=1 bash training/gpu_session.sh OUT_DIR BUDGET_SECONDS       # the autoencoder alone (train_gpu vae):
#                                                                        # brings back vae/ for a later --init-vae
# Expects the diffusers wheel the studio pins in .whl/ (the GPU image has torch, transformers and the rest).
# EXTRA: more `train_gpu all` flags (the model's layout, batch sizes). GPU_TESTS=1 (first call): `pytest -m gpu
# tests/pipelines` beside the rendering, into OUT/gpu_tests.txt. BENCH=1: after the training, the real-size
# multi-shot benchmark (random weights of Wan2.1-1.3B's transformer, 480p, 81 frames) for at most BENCH_SECONDS,
# into OUT/bench_multishot.txt; never beside the training, whose small launch-bound kernels it would starve.
# BENCH_STEP=1: before the training, bench/train_step.py on the card (the transformer step part by part and as the
# loop runs it; BENCH_LAYOUT 4 or 8, default 4; about 30 s) into OUT/bench_train_step.txt.
set -u
OUTDIR=${1:?output folder}
BUDGET=${2:-480}
WORK=/tmp/gpu-run
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, torch.cuda.is_available())"
if [ -n "${BENCH_STEP:-}" ]; then
    timeout 150 python3 bench/train_step.py --device "${DEVICE:-cuda}" --layout "${BENCH_LAYOUT:-4}" --steps 20 \
        > "$OUTDIR/bench_train_step.txt" 2>&1
    echo "benchmark exit $?" >> "$OUTDIR/bench_train_step.txt"
fi
if [ -n "${GPU_TESTS:-}" ]; then
    timeout 240 python3 -m pytest -m gpu tests/pipelines -q -p no:cacheprovider > "$OUTDIR/gpu_tests.txt" 2>&1 &
    TESTS_PID=$!
fi
if [ -n "${VAE_ONLY:-}" ]; then
    rm -rf "$WORK"
    python3 -m training.train_gpu vae --out "$WORK" --device "${DEVICE:-cuda}" --budget-seconds "$BUDGET" \
        ${EXTRA:-} 2>&1 | grep --line-buffered -v -e "Loading weights" -e "Writing model" | tee "$OUTDIR/train_vae.log"
elif [ -n "${CONTINUE:-}" ]; then
    python3 -m training.train_gpu continue --out "$WORK" --device "${DEVICE:-cuda}" --seconds "$BUDGET" --keep-pool \
        ${EXTRA:-} --text-encoder assets/demo/text_encoder 2>&1 \
        | grep --line-buffered -v -e "Loading weights" -e "Writing model" | tee "$OUTDIR/train_continue.log"
else
    rm -rf "$WORK"
    python3 -m training.train_gpu all --out "$WORK" --device "${DEVICE:-cuda}" --budget-seconds "$BUDGET" --keep-pool \
        ${EXTRA:-} --text-encoder assets/demo/text_encoder 2>&1 \
        | grep --line-buffered -v -e "Loading weights" -e "Writing model" | tee "$OUTDIR/train.log"
fi
if [ -n "${TESTS_PID:-}" ]; then wait "$TESTS_PID"; echo "gpu tests exit $?" >> "$OUTDIR/gpu_tests.txt"; fi
(
    cd "$WORK" || exit 1
    rm -f /tmp/result.tar.gz
    if [ -n "${VAE_ONLY:-}" ] && [ -d vae ]; then
        tar czf /tmp/result.tar.gz vae
    elif [ -d demo ]; then
        tar czf /tmp/result.tar.gz demo report.json run/latent_stats.json
    else
        echo "no export: bringing back the autoencoder checkpoints"
        tar czf /tmp/result.tar.gz $(ls vae_joint.pt vae_decoder.pt run/latent_stats.json 2>/dev/null)
    fi
    split -b 15M /tmp/result.tar.gz "$OUTDIR/result.tar.gz.part-"
)
if [ -n "${BENCH:-}" ]; then
    timeout "${BENCH_SECONDS:-120}" python3 -m bench.multishot --preset wan2.1-t2v-1.3b --random-weights \
        --max-shots "${BENCH_SHOTS:-2}" > "$OUTDIR/bench_multishot.txt" 2>&1
    echo "benchmark exit $?" >> "$OUTDIR/bench_multishot.txt"
fi
ls -la "$OUTDIR"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
