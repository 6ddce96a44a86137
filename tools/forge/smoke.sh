#!/bin/sh
# CI entry point: runs the whole forge pipeline with tiny settings into a temporary folder and checks
# that every artifact was written. Installs nothing; needs (Debian 12):
#   apt-get install -y python3-torch python3-numpy python3-regex libopenblas0-pthread fortunes wordnet-base \
#                      fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl
# OMP_NUM_THREADS=1: on a busy 2-core machine OpenMP spinning made training several times slower.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d /tmp/forge-smoke.XXXXXX)
trap 'rm -rf "$out"' EXIT
OMP_NUM_THREADS=1 /usr/bin/python3 "$here/forge.py" --smoke --out "$out/demo"
for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json \
         reward-head/config.json reward-head/head.safetensors reference/reference.safetensors \
         reference/README.md forge-results.json MODEL_CARD.md eval/index.json eval/README.md \
         eval/general.test.jsonl eval/reward.test.jsonl eval/prompts.test.jsonl \
         exit-probe/config.json exit-probe/probe.safetensors reference/exit-probe.safetensors \
         otter/config.json otter/otter.safetensors reference/otter.safetensors; do
  test -s "$out/demo/$f" || { echo "smoke: missing $f" >&2; exit 1; }
done
n=$(ls "$out/demo/adapters" | wc -l)
test "$n" -ge 8 || { echo "smoke: only $n adapters" >&2; exit 1; }
/usr/bin/python3 "$here/check.py" "$out/demo"
echo "forge smoke OK ($out/demo)"
