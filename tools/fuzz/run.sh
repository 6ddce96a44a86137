#!/usr/bin/env bash
# Fuzzes the parsers that see user bytes with afl-fuzz (Debian's afl++) and SharpFuzz.
#
#   tools/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 300 s, every target)
#
# Builds tools/fuzz, copies the output to $FUZZ_WORK (default ~/.cache/serving-fuzz), instruments the project's own
# assemblies there with SharpFuzz.CommandLine 2.3.0 (installed into $FUZZ_WORK/tool), writes the seeds from real files
# (serving-fuzz --seeds), runs afl-fuzz on each target in turn, then prints one line per target: executions, paths found,
# crashes and hangs (from afl-fuzz's fuzzer_stats). Crashing and hanging inputs stay under $FUZZ_WORK/out/<target>/default/.
# FUZZ_MINIMISE=1 also runs afl-cmin over each queue into tools/fuzz/corpus/<target>/ (the inputs the tests replay).
# The fuzzers run under `nice -n 19`: this machine is shared.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${FUZZ_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/serving-fuzz}" # not under /tmp: afl-cmin refuses to work there
seconds="${1:-300}"
shift || true
export SERVING_REPO="$repo"

dotnet build "$repo/tools/fuzz/Fuzz.csproj" -c Release -v q -nologo >/dev/null
# Seeds and the target list come from the uninstrumented build (instrumented code runs only under afl-fuzz).
plain=(dotnet "$repo/tools/fuzz/bin/Release/net10.0/linux-x64/Serving.Fuzz.dll")
rm -rf "$work/seeds" && mkdir -p "$work" && "${plain[@]}" --seeds "$work/seeds"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && mapfile -t targets < <("${plain[@]}" --list)
rm -rf "$work/bin" && mkdir -p "$work" && cp -r "$repo/tools/fuzz/bin/Release/net10.0/linux-x64" "$work/bin"
if [ ! -x "$work/tool/sharpfuzz" ]; then
  dotnet tool install SharpFuzz.CommandLine --version 2.3.0 --tool-path "$work/tool" >/dev/null
fi
for dll in Serving.Contracts Serving.Checkpoints Serving.AdapterStore Serving.Inference Serving.Inference.Node; do
  "$work/tool/sharpfuzz" "$work/bin/$dll.dll" >/dev/null
done

# afl-cmin wants the interpreter by its path.
fuzz=("$(readlink -f "$(command -v dotnet)")" "$work/bin/Serving.Fuzz.dll")

export AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
for t in "${targets[@]}"; do
  seeds="$work/seeds/$t"
  # Earlier campaigns' minimised inputs seed the next one.
  [ -d "$repo/tools/fuzz/corpus/$t" ] && cp -n "$repo/tools/fuzz/corpus/$t"/* "$seeds"/ 2>/dev/null || true
  rm -rf "$work/out/$t" && mkdir -p "$work/out"
  nice -n 19 afl-fuzz -i "$seeds" -o "$work/out/$t" -t 5000 -m none -V "$seconds" -- "${fuzz[@]}" "$t" >"$work/$t.log" 2>&1 || {
    echo "afl-fuzz failed on $t (see $work/$t.log)"; tail -20 "$work/$t.log"; exit 1; }
  if [ "${FUZZ_MINIMISE:-0}" = 1 ]; then
    mkdir -p "$repo/tools/fuzz/corpus/$t"
    rm -rf "$work/cmin-$t"
    nice -n 19 afl-cmin -i "$work/out/$t/default/queue" -o "$work/cmin-$t" -t 5000 -m none -- "${fuzz[@]}" "$t" >"$work/cmin-$t.log" 2>&1 \
      || { echo "afl-cmin failed on $t (see $work/cmin-$t.log); corpus left as it was"; continue; }
    # afl-fuzz's names (id:000012,src:...) hold colons: numbered names keep the corpus portable.
    rm -f "$repo/tools/fuzz/corpus/$t"/cmin-*
    i=0
    for f in "$work/cmin-$t"/*; do cp "$f" "$repo/tools/fuzz/corpus/$t/cmin-$(printf %03d "$i")"; i=$((i + 1)); done
  fi
done

printf '%-20s %12s %8s %8s %6s %10s\n' target executions paths crashes hangs seconds
for t in "${targets[@]}"; do
  s="$work/out/$t/default/fuzzer_stats"
  v() { awk -F' *: *' -v k="$1" '$1==k {print $2}' "$s"; }
  printf '%-20s %12s %8s %8s %6s %10s\n' "$t" "$(v execs_done)" "$(v corpus_count)" "$(v saved_crashes)" "$(v saved_hangs)" "$(v run_time)"
done
