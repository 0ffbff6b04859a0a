#!/bin/bash
# CPU decode and prefill on random-weight files of a real model's shape.
#
#   bench/cpu.sh                      TinyLlama-1.1B shape, Q8_0 Q4_0
#                                     Q4_K_M F16, all online CPUs
#   TYPES="q8_0" THREADS=1 PRESET=llama3.2-1b bench/cpu.sh
#
# Writes the files once under $BENCH_DIR (default $BUILD/bench, never
# committed), runs `llm-engine bench` on each and prints a markdown
# section for bench/RESULTS.md: the machine, then one row per type with
# the decode rate as a share of the memory-read ceiling that the same
# run measured.

set -euo pipefail

cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
BENCH_DIR=${BENCH_DIR:-$BUILD/bench}
PRESET=${PRESET:-tinyllama}
TYPES=${TYPES:-q8_0 q4_0 q4_k_m f16}
THREADS=${THREADS:-$(nproc)}
PROMPT=${PROMPT:-128}
GEN=${GEN:-32}
REPS=${REPS:-3}

make -s BUILD="$BUILD" engine tools >&2
mkdir -p "$BENCH_DIR"

for t in $TYPES; do
    f="$BENCH_DIR/$PRESET-$t.gguf"
    if [ ! -s "$f" ]; then
        echo "writing $f" >&2
        "$BUILD/gguf-write" --preset "$PRESET" --type "$t" --out "$f.tmp"
        mv "$f.tmp" "$f"
    fi
done

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' \
        | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni|amx_int8|amx_bf16)$' \
        | tr '\n' ' ')

echo "### CPU decode/prefill: $PRESET shape, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "Machine: $cpu, $(nproc) online CPUs, $THREADS threads;" \
     "flags that matter: ${flags% }; load average before:" \
     "$(cut -d' ' -f1-3 /proc/loadavg)."
echo "Random weights written by \`gguf-write --preset $PRESET\`;" \
     "\`llm-engine bench --prompt-tokens $PROMPT --gen-tokens $GEN" \
     "--reps $REPS\`, best of $REPS.  Ceiling = memory read bandwidth" \
     "measured in the same run / bytes of weights read per token;" \
     "threads ran: CPU time used / (wall time x threads), below 100%" \
     "when the threads wait: on a large model, for CPUs that other" \
     "processes hold."
echo
echo "| weights | read/token MB | read GB/s | ceiling tok/s | decode tok/s | of ceiling | prefill $PROMPT tok/s | threads ran (decode, prefill) | kernels |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"

for t in $TYPES; do
    f="$BENCH_DIR/$PRESET-$t.gguf"
    out=$("$BUILD/llm-engine" bench --model "$f" --threads "$THREADS" \
              --prompt-tokens "$PROMPT" --gen-tokens "$GEN" --reps "$REPS")
    echo "$out" | sed 's/^/    /' >&2
    line=$(echo "$out" | grep '^result ')

    get() {
        echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"
    }

    printf '| %s | %.0f | %.1f | %.2f | %.2f | %.0f%% | %.1f | %.0f%%, %.0f%% | %s |\n' \
        "$t" "$(get weights_mb)" "$(get bw_gbs)" "$(get ceiling_tps)" \
        "$(get decode_tps)" "$(echo "$(get ratio) * 100" | bc -l)" \
        "$(get prefill_tps)" "$(echo "$(get decode_ran) * 100" | bc -l)" \
        "$(echo "$(get prefill_ran) * 100" | bc -l)" "$(get cpu)"
done
