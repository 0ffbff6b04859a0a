#!/bin/bash
# The serving engine on the CPU, through its own protocol (no nginx):
# total decode rate with 1, 4, 16 and 64 sequences at once, and the time
# to first token for a long shared prefix: cold, from the local prefix
# cache, and from Redis after an engine restart.
#
#   bench/serve.sh                 TinyLlama-1.1B shape, Q4_0
#   CONC="1 4" GEN=16 PREFIX=500 bench/serve.sh
#
# Writes the model file once under $BENCH_DIR (never committed) and
# prints a markdown section for bench/RESULTS.md.

set -euo pipefail

cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
BENCH_DIR=${BENCH_DIR:-$BUILD/bench}
PRESET=${PRESET:-tinyllama}
TYPE=${TYPE:-q4_0}
CONC=${CONC:-1 4 16 64}
GEN=${GEN:-32}
PREFIX=${PREFIX:-1000}

make -s BUILD="$BUILD" engine tools >&2
mkdir -p "$BENCH_DIR"

model="$BENCH_DIR/$PRESET-$TYPE.gguf"
if [ ! -s "$model" ]; then
    echo "writing $model" >&2
    "$BUILD/gguf-write" --preset "$PRESET" --type "$TYPE" --out "$model.tmp"
    mv "$model.tmp" "$model"
fi

tmp=$(mktemp -d)
sock="$tmp/engine.sock"
port=$(perl -MIO::Socket::INET -e \
    'print IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1")->sockport')
engine=""
redis=""

cleanup() {
    [ -n "$engine" ] && kill "$engine" 2>/dev/null && wait "$engine" || true
    [ -n "$redis" ] && kill "$redis" 2>/dev/null && wait "$redis" || true
    rm -rf "$tmp"
}
trap cleanup EXIT

redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    >"$tmp/redis.log" 2>&1 &
redis=$!

start_engine() {
    "$BUILD/llm-engine" serve --socket "$sock" --model "m=$model" \
        --kv-cache 2G --max-seqs 64 --slots 64 \
        --redis "127.0.0.1:$port" >>"$tmp/engine.log" 2>&1 &
    engine=$!
    for _ in $(seq 1 600); do
        [ -S "$sock" ] && return 0
        sleep 0.1
    done
    echo "engine did not start:" >&2
    cat "$tmp/engine.log" >&2
    exit 1
}

stop_engine() {
    kill "$engine"
    wait "$engine" || true
    engine=""
}

field() {
    sed -n "s/^$1: //p"
}

start_engine

declare -A rate
for n in $CONC; do
    echo "throughput: $n sequences" >&2
    rate[$n]=$("$BUILD/sched-bench" throughput "$sock" m "$n" "$GEN" \
               | field decode_tok_s)
done

echo "ttft: cold, then local" >&2
cold=$("$BUILD/sched-bench" ttft "$sock" m "$PREFIX" 1)
local_hit=$("$BUILD/sched-bench" ttft "$sock" m "$PREFIX" 2)

# let the tier's thread write the blocks (until Redis stops growing),
# then start from an empty cache
prev=-1
for _ in $(seq 1 120); do
    keys=$(redis-cli -p "$port" dbsize)
    [ "$keys" = "$prev" ] && break
    prev=$keys
    sleep 1
done
stop_engine
start_engine
echo "ttft: from Redis after a restart" >&2
redis_hit=$("$BUILD/sched-bench" ttft "$sock" m "$PREFIX" 3)

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)

echo "### Serving engine: $PRESET shape, $TYPE, $(date -u +%Y-%m-%d)"
echo
echo "Machine: $cpu, $(nproc) online CPUs (all used by the engine)." \
     "\`bench/serve.sh\`: the engine through its own protocol" \
     "(\`sched-bench\`), random weights from \`gguf-write\`."
echo
echo "| sequences at once | total decode tok/s | vs one |"
echo "|---:|---:|---:|"
one=${rate[1]:-}
for n in $CONC; do
    if [ -n "$one" ]; then
        ratio=$(awk -v a="${rate[$n]}" -v b="$one" 'BEGIN{printf "%.2fx", a/b}')
    else
        ratio="-"
    fi
    echo "| $n | ${rate[$n]} | $ratio |"
done
echo
echo "Time to first token, $PREFIX-token shared prefix + 8 tokens:"
echo
echo "| prefix from | cached tokens | TTFT ms | vs cold |"
echo "|---|---:|---:|---:|"
c_ms=$(echo "$cold" | field ttft_ms)
for row in "cold (computed):$cold" "local prefix cache:$local_hit" \
           "Redis, after an engine restart:$redis_hit"; do
    name=${row%%:*}
    out=${row#*:}
    ms=$(echo "$out" | field ttft_ms)
    echo "| $name | $(echo "$out" | field cached_tokens) | $ms |" \
         "$(awk -v a="$c_ms" -v b="$ms" 'BEGIN{printf "%.1fx", a/b}') |"
done
