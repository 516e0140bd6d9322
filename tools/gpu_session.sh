#!/usr/bin/env bash
# A time-boxed GPU run in one command: build for the GPU at hand, then the stages in order (the most
# wanted first: the attention benchmarks and tile sweep, the CUDA tests, the memory-bound benchmarks,
# the rest), each capped by one deadline so that a slow stage cannot starve the rest. After every stage the logs, the pytest junit XML and the benchmark
# JSON/PNG so far are archived to $OUT/gpu-results.tgz, so a run killed from outside still returns
# them; $OUT/stages.txt has one line per stage (exit code, seconds).
#
#   OUT=/tmp/gpu tools/gpu_session.sh [seconds, default 560]
#
# STAGES lists the stages to run, in order (default: all, see below): benchmark groups, "tune"
# (tools/tune_attention.py, the attention tile sweep) and "tests" (every CUDA test; TESTS_K narrows
# them with a pytest -k expression). "membound" stands for rope rms_norm silu_mul pixel_shuffle
# patch_embed. BENCHES is the former name of STAGES.
#
# Optional peers (liger-kernel, ...) travel as wheels in .whl/ and are installed to /tmp/site.
set -u
BUDGET=${1:-560}
OUT=${OUT:-gpu-out}
WORK=${WORK:-/tmp/vlmops-gpu-session}
mkdir -p "$OUT" "$WORK/logs" "$WORK/bench"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
deadline=$(( $(date +%s) + BUDGET - 10 ))

archive() {
  cp /tmp/vlmops-bench-*.log "$WORK/logs/" 2>/dev/null
  cp "$OUT/stages.txt" "$WORK/" 2>/dev/null
  tar czf "$OUT/gpu-results.tgz" -C "$WORK" . 2>/dev/null
}

stage() {  # stage NAME MAX_SECONDS CMD...: runs CMD for at most MAX_SECONDS, and never past the deadline
  local name=$1 limit=$2 left start rc
  shift 2
  left=$(( deadline - $(date +%s) ))
  (( left < limit )) && limit=$left
  if (( limit < 10 )); then echo "$name skipped: deadline" | tee -a "$OUT/stages.txt"; return; fi
  start=$(date +%s)
  timeout -k 5 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $(( $(date +%s) - start ))s (limit ${limit}s)" | tee -a "$OUT/stages.txt"
  tail -n 4 "$WORK/logs/$name.log"
  archive
}

bench() {  # bench NAME MAX_SECONDS PYTEST_K_EXPRESSION
  stage "bench_$1" "$2" $PY -m benchmarks --device cuda --full --only "$3" --out "$WORK/bench/$1" --no-readme \
    --kernel-report /nonexistent
}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv 2>&1 | tee "$WORK/logs/gpu.txt"
if compgen -G ".whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
$PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__,
'transformers', transformers.__version__)" 2>&1 | tee "$WORK/logs/versions.txt"

stage build 240 $PY setup.py --quiet build_ext --inplace
# Attention first (its benchmarks assert parity with the reference before timing), the tile sweep,
# the CUDA tests, then the memory-bound kernels (RoPE, RMSNorm, SiLU-mul, pixel shuffle + LayerNorm,
# the fused patch normalize); "membound" names those five. Their limits are about 1.5x each group's
# duration at --full in benchmarks/results/cuda-h200-2026-11-26 (rope 60 s, pixel_shuffle 46 s,
# patch_embed 30 s; rms_norm and silu_mul, not run there, taken as 40 s), so one slow group cannot
# starve the next.
for group in ${STAGES:-${BENCHES:-varlen tune gated tests membound varlen_flex tower cuda_graph clip_tower}}; do
  [ "$group" = membound ] && group="rope rms_norm silu_mul pixel_shuffle patch_embed"
  for name in $group; do
    case $name in
      varlen) bench varlen 120 "bench_varlen_attention and not flex" ;;
      gated) bench gated 100 "bench_gated_cross_attention or bench_mllama_cross_attention" ;;
      rope) bench rope 110 "bench_rope or bench_text_mrope" ;;
      rms_norm) bench rms_norm 60 "bench_rms_norm" ;;
      silu_mul) bench silu_mul 60 "bench_silu_mul" ;;
      pixel_shuffle) bench pixel_shuffle 70 "bench_pixel_shuffle" ;;
      patch_embed) bench patch_embed 50 "bench_patch_embed" ;;
      varlen_flex) bench varlen_flex 110 "bench_varlen_attention and flex" ;;
      tower) bench tower 80 "bench_vision_tower" ;;
      cuda_graph) bench cuda_graph 60 "bench_cuda_graph_tower" ;;
      clip_tower) bench clip_tower 60 "bench_clip_tower" ;;
      tune) stage tune 150 $PY tools/tune_attention.py qwen2.5-vl-4img qwen2.5-vl-window internvit-6b ;;
      tests) stage tests 170 $PY -m pytest tests -m requires_cuda ${TESTS_K:+-k "$TESTS_K"} -v -p no:cacheprovider \
        -rfE --tb=short -n 4 --timeout 60 --junitxml="$WORK/logs/tests.xml" ;;
      *) echo "unknown benchmark group $name" | tee -a "$OUT/stages.txt" ;;
    esac
  done
done
cat "$OUT/stages.txt"
