#!/usr/bin/env bash
# The GPU session's script (issue 17 part 4), prepared on CPU-only machines: NOT YET RUN ON A GPU.
# From the repository root on the device machine:  bash bench/gpu/run.sh   (results under $OUT, default bench/gpu/out)
#   1. environment (nvidia-smi, torch, transformers);
#   2. a CUDA build of the tools (-p:UseCuda=true: Microsoft.ML.OnnxRuntime.Gpu.Linux must be restorable there; if not,
#      the reason is recorded and the fp16 checks run on the CPU provider instead);
#   3. fidelity against transformers in float64: the engine's fp32 logits (committed) and its fp16 blocks (CUDA, else
#      CPU) for every family fixture, max relative difference per fixture (target: fp16 <= 1e-2);
#   4. decode throughput, gpt2-small and llama-small random checkpoints: the engine's fp16 blocks (DecodeBench --fp16
#      [--cuda]) and transformers eager fp16 on cuda (hf_decode.py) at batch 1/8/32;
#   5. adapters (AdapterBench --fp16 [--cuda]): one adapter vs base, and N = 1…512 distinct adapters per batch.
# Each step goes on when one before it fails; run.log says what ran.
set -uo pipefail
OUT=${OUT:-bench/gpu/out}
mkdir -p "$OUT"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/run.log"; }
HF=bench/gpu/hf_families

log environment
{ nvidia-smi || echo "no nvidia-smi"; python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"; dotnet --version; } > "$OUT/environment.txt" 2>&1

log "CUDA build (tools/Generate, bench/DecodeBench, bench/AdapterBench)"
CUDA=--cuda
if ! dotnet build -c Release -p:UseCuda=true tools/Generate bench/DecodeBench bench/AdapterBench > "$OUT/build-cuda.log" 2>&1; then
  log "CUDA build failed (see build-cuda.log); fp16 checks on the CPU provider"
  CUDA=
  dotnet build -c Release tools/Generate bench/DecodeBench bench/AdapterBench > "$OUT/build-cpu.log" 2>&1 || log "CPU build failed too"
fi
GEN=tools/Generate/bin/Release/net10.0/linux-x64/Serving.Generate.dll
BENCH=bench/DecodeBench/bin/Release/net10.0/linux-x64/Serving.DecodeBench.dll
ADAPTERS=bench/AdapterBench/bin/Release/net10.0/linux-x64/Serving.AdapterBench.dll

log "fidelity: engine fp16 blocks ${CUDA:-(CPU)} for each family fixture"
IDS=$(python3 -c "import json;print(','.join(map(str,json.load(open('$HF/tokens.json'))['tokens'])))")
mkdir -p "$OUT/engine_fp16"
for f in "$HF"/fixtures/*/; do
  name=$(basename "$f")
  dotnet "$GEN" "$f" --logits-json "$OUT/engine_fp16/$name.json" --token-ids "$IDS" --fp16 $CUDA >> "$OUT/generate.log" 2>&1 || log "$name: engine fp16 failed"
done
log "fidelity: transformers float64 vs the engine's fp32 (committed) and fp16 logits"
python3 "$HF/hf_check.py" --out "$OUT/hf_fp32" > "$OUT/hf_fp32.txt" 2>&1 || log "hf_check fp32 failed"
python3 "$HF/hf_check.py" --out "$OUT/hf_fp16" --engine-dir "$OUT/engine_fp16" > "$OUT/hf_fp16.txt" 2>&1 || log "hf_check fp16 failed"

for shape in gpt2-small llama-small; do
  log "decode: engine fp16 ${CUDA:-(CPU)}, $shape"
  dotnet "$BENCH" --shape "$shape" --batches 1,8,32 --steps 64 --reps 3 --no-torch --fp16 $CUDA --json "$OUT/decode-fp16-$shape.json" > "$OUT/decode-fp16-$shape.txt" 2>&1 || log "DecodeBench $shape failed"
  log "decode: transformers eager fp16, $shape"
  python3 bench/gpu/hf_decode.py ".fixtures/$shape" --batches 1,8,32 --steps 64 --reps 3 > "$OUT/hf-decode-$shape.json" 2> "$OUT/hf-decode-$shape.err" || log "hf_decode $shape failed"
done
log "adapters: one adapter vs base at batch 1/8/32 and N = 1, 32, 128, 512 distinct adapters at concurrency 32 (fp16 ${CUDA:-(CPU)})"
dotnet "$ADAPTERS" --shape gpt2-small --only a,b --ns 1,32,128,512 --reps 2 --requests 3 --tokens 32 --fp16 $CUDA > "$OUT/adapters-gpt2-small.txt" 2>&1 || log "AdapterBench failed"
log done
