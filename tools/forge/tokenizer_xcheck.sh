#!/bin/sh
# Cross-checks a forged tokenizer.json against Hugging Face's own JS implementation (@huggingface/tokenizers,
# fetched with npm into a temporary folder; needs node + npm registry access, so it is not part of CI).
# Usage: tools/forge/tokenizer_xcheck.sh [model dir, default models/demo]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=$(cd "${1:-$here/../../models/demo}" && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm install --silent @huggingface/tokenizers@0.2.0 >/dev/null)
/usr/bin/python3 "$here/tokenizer_cases.py" "$dir" "$tmp/cases.json"
cp "$here/tokenizer_xcheck.mjs" "$tmp/"
node "$tmp/tokenizer_xcheck.mjs" "$dir" "$tmp/cases.json"
