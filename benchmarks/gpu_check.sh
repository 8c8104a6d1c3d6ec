#!/usr/bin/env bash
# The paper profile's GPU figures in at most 8 minutes on one GPU (issue 13, section 5).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# From the repository root, in an environment where avsc is installed (python3 tasks.py
# setup, or PYTHON=/path/to/python). Prints one `name: value` line per figure:
#   1. the GPU's name and memory;
#   2. the rehearsal of the paper profile on the GPU (avsc run --profile paper --rehearse:
#      every notebook, 1280x720 H.264 and 48 kHz 24-bit synthetic clips, random weights, one
#      epoch) and its projection of the full run: hours, disk, peak host and GPU memory;
#   3. AMP (bf16) + channels_last training throughput of the joint system with
#      tf_efficientnetv2_s at 288 px, batch 256: online, image-major and bank; one joint
#      epoch of the full development set and 150 epochs projected; peak GPU memory;
#   4. the loader: images/s per CPU worker, and JPEG decoding + augmentation on the GPU
#      (train.decode_on_device) against one worker.
# Each step has its own time limit, so one that hangs cannot take the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${1:-${OUT:-/tmp/avsc-gpu-check}}
mkdir -p "$OUT"
export AVSC_PROGRESS=0
t0=$(date +%s)

gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
if [ -z "$gpu" ]; then
    echo "gpu_check: no NVIDIA GPU visible (nvidia-smi); nothing to measure" >&2
    exit 1
fi
echo "gpu_name: ${gpu%%,*}"
echo "gpu_memory: ${gpu#*, }"
echo "torch: $($PY -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"

# 2. the rehearsal on the GPU (1-s clips: the smallest size that runs every code path)
if timeout 240 "$PY" -m avsc run --profile paper --rehearse --runs "$OUT/runs" \
        --figures "$OUT/figures" -p data.clip_seconds=1 >"$OUT/rehearsal.log" 2>&1; then
    echo "rehearsal_status: ok"
    "$PY" - "$OUT/runs/paper-rehearsal/projection.json" <<'EOF'
import json, sys
p = json.load(open(sys.argv[1]))
m, pr = p["measured"], p["projected"]
print(f"rehearsal_seconds: {sum(m['notebook_seconds'].values()):.0f}")
sec = m["clips"] * m["clip_seconds"]
print(f"rehearsal_preprocess_s_per_audio_second: {m['preprocess_seconds'] / sec:.3f}")
print(f"rehearsal_store_mb_per_10s_clip: {m['store_bytes'] / sec * 10 / 1e6:.2f}")
print(f"projected_full_run_hours_one_gpu: {pr['hours']:.1f}")
print(f"projected_full_run_disk_gb: {pr['disk_bytes'] / 1e9:.0f}")
print(f"projected_peak_host_memory_gib: {pr['peak_host_memory_mb'] / 1024:.1f}")
gpu = pr["peak_gpu_memory_mb"]
print(f"rehearsal_peak_gpu_memory_gib: {gpu / 1024:.1f}" if gpu else "rehearsal_peak_gpu_memory_gib: n/a")
for s in p["steps"]:
    key = s["step"].split(" (")[0].replace(" ", "_")
    print(f"projected_hours_{key}: {s['projected_hours']:.2f}")
EOF
else
    echo "rehearsal_status: failed (rc $?, log $OUT/rehearsal.log)"
    tail -5 "$OUT/rehearsal.log" | sed 's/^/  /'
fi

# 3. model throughput at the paper's scale
timeout 90 "$PY" benchmarks/gpu_throughput.py --device cuda --steps 20 \
    || echo "gpu_throughput_status: failed (rc $?)"

# 4. feeding the GPU: CPU loader workers vs decoding and augmenting on the GPU
timeout 120 "$PY" benchmarks/loader.py --device cuda --workers 4 \
    || echo "loader_status: failed (rc $?)"

echo "gpu_check_seconds: $(( $(date +%s) - t0 ))"
