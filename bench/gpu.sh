#!/usr/bin/env bash
# bench/gpu.py on the GPU machine of the `device` tool, as one call (../shared/gpu/README.md). Prepare here:
#   bash ../shared/gpu/make-bundle.sh .gpu                       # Ray + DeepSpeed for the GPU machine, ~27 MB
#   cp -r ../shared/data .gpu-data && mkdir -p .gpu-cache && cp ~/.cache/archsweep/*-cells.npz .gpu-cache/
#   printf '/.gpu/\n/.gpu-data/\n/.gpu-cache/\n' >> .git/info/exclude
# then: run(command="bash bench/gpu.sh", carry=[".gpu", ".gpu-data", ".gpu-cache"], timeout_s=600).
# Everything it measures lands in $OUT: gpu.log, gpu.json, the GPU's name, and docs/BENCHMARKS.md with the block.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
source .gpu/install.sh
export ARCHSWEEP_DATA_DIR=$PWD/.gpu-data ARCHSWEEP_CACHE_DIR=$PWD/.gpu-cache
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
timeout 120 python3 -c "from archsweep.spaces import get_space
for s in ('nasbench201', 'nasbench101'): print(s, len(get_space(s).enumerate()), 'cells')" 2>&1 | tee "$OUT/warm.log"
timeout 450 python3 -m bench.gpu --write --json "$OUT/gpu.json" > "$OUT/gpu.log" 2>&1
echo "bench/gpu.py exit status: $?" | tee -a "$OUT/gpu.log"
tail -40 "$OUT/gpu.log"
cp docs/BENCHMARKS.md "$OUT/"
