#!/usr/bin/env bash
# Prepared by `cargo xtask gpu-check`; runs on a machine with an NVIDIA GPU (driver installed,
# PyTorch with CUDA for the peer comparison). Results go to $OUT (default ./results):
#   gpu.txt      the card, driver and date
#   tests.txt    the fused-vs-composed kernel tests on the CUDA backend
#   bench.md     moment's bench at 16M and 256M f32 parameters (table), bench.json (data)
#   torch.json   torch.optim.AdamW(fused=True) and (foreach) on the same card, same sizes
#   summary.txt  exit status of each part
set -u
here=$(cd "$(dirname "$0")" && pwd)
# The binaries travel gzip'd.
for b in moment-cuda-tests bench; do
    if [ -f "$here/$b.gz" ]; then
        gzip -dc "$here/$b.gz" >"$here/$b" && chmod +x "$here/$b"
    fi
done
out=${OUT:-$here/results}
mkdir -p "$out"
sizes=${SIZES:-16M,256M}
{
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv 2>&1
} >"$out/gpu.txt"
: >"$out/summary.txt"
"$here/moment-cuda-tests" --test-threads=1 >"$out/tests.txt" 2>&1
echo "tests rc=$?" >>"$out/summary.txt"
"$here/bench" --backend cuda --sizes "$sizes" --optimizers adamw,lion,sophia,adamw8bit \
    --model none --reps 20 --json "$out/bench.json" >"$out/bench.md" 2>&1
echo "bench rc=$?" >>"$out/summary.txt"
python3 "$here/torch_adamw.py" --sizes "$sizes" --json "$out/torch.json" >"$out/torch.txt" 2>&1
echo "torch rc=$?" >>"$out/summary.txt"
cat "$out/summary.txt"
