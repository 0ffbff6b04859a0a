#!/bin/bash
# The HTTP path: 24-token completions of "Once upon a time" on the shipped
# model (stories260K), through nginx and the module, and from the engine
# itself through shared memory (loadgen --direct), at the concurrencies of
# the reference numbers in DESIGN.md ("Performance model").
#
#   bench/http.sh                         10 s per point after 2 s of
#                                         warm-up, best of 3
#   BENCH_SECONDS=30 CONNS="1 8 32 64" bench/http.sh
#   PERF=1 bench/http.sh                  also profile the engine and one
#                                         nginx worker under 32 connections
#
# Builds what is missing, runs everything under a temporary directory
# (kept with BENCH_KEEP=1), stops it all at the end, and prints a
# markdown section for bench/RESULTS.md on stdout; progress on stderr.
#
# Knobs: BUILD (build), BENCH_SECONDS (10), BENCH_WARMUP (2),
# BENCH_REPS (3: each point is the best of that many runs, by req/s, as
# neighbours on a shared machine only ever slow a run down), CONNS
# ("1 8 32"), STREAM_CONNS ("8 32"), WORKERS (nproc), ENGINE_ARGS.

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BUILD=${BUILD:-build}
make -s BUILD="$BUILD" engine module loadgen >&2
case $BUILD in
    /*) ;;
    *) BUILD=$ROOT/$BUILD ;;
esac

SECS=${BENCH_SECONDS:-10}
WARMUP=${BENCH_WARMUP:-2}
REPS=${BENCH_REPS:-3}
CONNS=${CONNS-1 8 32}
STREAM_CONNS=${STREAM_CONNS-8 32}
LOADGEN=$BUILD/loadgen

RUN=$(mktemp -d "${TMPDIR:-/tmp}/ngx_llm_http.XXXXXX")

# shellcheck source=bench/stack.sh
. "$ROOT/bench/stack.sh"

cleanup() {
    stack_stop
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "kept $RUN" >&2
    else
        rm -rf "$RUN"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# reference: nginx proxy_pass in front of llama-server, and llama-server
# alone, same model and machine (DESIGN.md)
declare -A REF_PROXY=([1]=178 [8]=271 [32]=231)
declare -A REF_PROXY_P50=([1]=5.5 [8]=29 [32]=131)
declare -A REF_DIRECT=([1]=195 [8]=285 [32]=256)

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
stack_start
echo "engine pid $ENGINE_PID, nginx pid $NGINX_PID on $URL," \
     "workers $(stack_workers | tr '\n' ' ')" >&2

# run NAME ARGS...: REPS loadgen runs; the one with the most requests/s
# is kept as $RUN/NAME.txt, with the engine's counters before and after
# it in $RUN/NAME.stats[01]
run() {
    local name=$1 r best=-1 rps
    shift
    echo "== $name: loadgen $*" >&2
    for r in $(seq "$REPS"); do
        "$LOADGEN" --direct "$SOCK" --stats > "$RUN/$name.$r.stats0"
        "$LOADGEN" -w "$WARMUP" -d "$SECS" --max-tokens 24 "$@" \
            > "$RUN/$name.$r.txt" 2> "$RUN/$name.$r.err" || true
        "$LOADGEN" --direct "$SOCK" --stats > "$RUN/$name.$r.stats1"
        grep -E '^(req_per_s|errors|latency_ms_p50|first_error):' \
            "$RUN/$name.$r.txt" | tr '\n' ' ' >&2
        echo >&2
        rps=$(sed -n 's/^req_per_s: //p' "$RUN/$name.$r.txt")
        if awk -v a="${rps:-0}" -v b="$best" 'BEGIN { exit !(a > b) }'; then
            best=${rps:-0}
            cp "$RUN/$name.$r.txt" "$RUN/$name.txt"
            cp "$RUN/$name.$r.stats0" "$RUN/$name.stats0"
            cp "$RUN/$name.$r.stats1" "$RUN/$name.stats1"
        fi
    done
}

# get NAME KEY: a value from a summary
get() {
    sed -n "s/^$2: //p" "$RUN/$1.txt" | head -1
}

# steps NAME: forward steps of the engine during a run, as
# "steps | tokens per step | us per step | us per token"
steps() {
    awk '/^stat_(steps|step_tokens|step_us):/ {
             k = substr($1, 1, length($1) - 1)
             if (FILENAME ~ /stats0$/) a[k] = $2; else b[k] = $2
         }
         END {
             n = b["stat_steps"] - a["stat_steps"]
             t = b["stat_step_tokens"] - a["stat_step_tokens"]
             u = b["stat_step_us"] - a["stat_step_us"]
             printf "%d | %.1f | %.0f | %.1f", n, n ? t / n : 0,
                    n ? u / n : 0, t ? u / t : 0
         }' "$RUN/$1.stats0" "$RUN/$1.stats1"
}

# cpu_ticks PID: user + system clock ticks the process has used
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# perf_profile LOADGEN_PID: 4 s of perf on the engine and a worker, and
# how the CPU time of that window splits between the processes
perf_profile() {
    local w p pids t1 hz

    w=$(stack_workers | head -1)
    pids="$ENGINE_PID $(stack_workers | tr '\n' ' ') $1"
    declare -A t0
    for p in $pids; do t0[$p]=$(cpu_ticks "$p"); done

    perf record -g -p "$ENGINE_PID" -o "$RUN/perf.engine" -- sleep 4 \
        > /dev/null 2>&1 &
    p=$!
    perf record -g -p "$w" -o "$RUN/perf.nginx" -- sleep 4 \
        > /dev/null 2>&1
    wait "$p" || true
    hz=$(getconf CLK_TCK)

    echo "== CPU in the 4 s window (seconds; 2 CPUs = 8 s)" >&2
    for p in $pids; do
        t1=$(cpu_ticks "$p")
        printf '%-8s %-12s %5.2f\n' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)" \
            "$(awk -v a="${t0[$p]}" -v b="$t1" -v hz="$hz" \
                'BEGIN { print (b - a) / hz }')" >&2
    done
    for p in engine nginx; do
        echo "== perf: $p" >&2
        perf report -i "$RUN/perf.$p" --stdio --no-children 2>/dev/null \
            | grep -E '^ +[0-9.]+%' | head -25 >&2 || true
    done
}

for c in $CONNS; do
    run "http-json-$c" -c "$c" "$URL/v1/completions"
    run "direct-json-$c" -c "$c" --direct "$SOCK"
done

for c in $STREAM_CONNS; do
    run "http-sse-$c" -c "$c" --stream "$URL/v1/completions"
    run "direct-sse-$c" -c "$c" --stream --direct "$SOCK"
done

if [ "${PERF:-0}" = 1 ]; then
    echo "== profiling under 32 connections" >&2
    "$LOADGEN" -c 32 -d 8 --max-tokens 24 "$URL/v1/completions" \
        > "$RUN/perf-load.txt" 2>&1 &
    lg=$!
    sleep 2
    perf_profile "$lg"
    wait "$lg" || true
fi

# --- the table ---------------------------------------------------------

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b;
                                     else printf "-" }'
}

row() {
    local name=$1 path=$2 mode=$3 c=$4 ref=$5 refp50=$6 rps

    rps=$(get "$name" req_per_s)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |\n' \
        "$path" "$mode" "$c" "$rps" "$ref" \
        "$( [ "$ref" = - ] && echo - || echo "$(ratio "$rps" "$ref")x")" \
        "$(get "$name" latency_ms_p50)" "$refp50" \
        "$(get "$name" latency_ms_p99)" "$(get "$name" ttft_ms_p50)" \
        "$(get "$name" itl_ms_p50)" "$(get "$name" itl_ms_p99)" \
        "$(get "$name" errors)"
}

echo "### HTTP path: stories260K, 24-token completions, $(date -u +%Y-%m-%d)"
echo
echo "Machine: $(stack_machine)."
echo "The engine, nginx ($WORKERS workers) and the load generator share it"
echo "(load average before $load_before, after"
echo "$(cut -d' ' -f1-3 /proc/loadavg)).  Commit $(stack_commit)."
echo "\`bench/http.sh\`: best of $REPS runs of $SECS s per point, each after"
echo "$WARMUP s of warm-up; \`temperature 0\`, prompt \"Once upon a time\","
echo "keep-alive connections.  Latency is per request, TTFT to the first"
echo "event with text (the whole response without streaming), ITL between"
echo "events with text.  Reference (DESIGN.md): nginx \`proxy_pass\` in"
echo "front of llama-server for the nginx rows, llama-server alone for the"
echo "engine rows; same model and machine."
echo
echo "| path | body | conns | req/s | reference req/s | ratio | p50 ms | reference p50 ms | p99 ms | TTFT p50 ms | ITL p50 / p99 ms | errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for c in $CONNS; do
    row "http-json-$c" "nginx + ngx_llm" JSON "$c" \
        "${REF_PROXY[$c]:--}" "${REF_PROXY_P50[$c]:--}"
done
for c in $STREAM_CONNS; do
    row "http-sse-$c" "nginx + ngx_llm" SSE "$c" - -
done
for c in $CONNS; do
    row "direct-json-$c" "engine, shared memory" JSON "$c" \
        "${REF_DIRECT[$c]:--}" -
done
for c in $STREAM_CONNS; do
    row "direct-sse-$c" "engine, shared memory" SSE "$c" - -
done
echo
echo "The engine's forward steps during each run (its counters):"
echo
echo "| run | steps | tokens/step | us/step | us/token |"
echo "|---|---:|---:|---:|---:|"
for c in $CONNS; do
    echo "| nginx JSON $c | $(steps "http-json-$c") |"
done
for c in $STREAM_CONNS; do
    echo "| nginx SSE $c | $(steps "http-sse-$c") |"
done
for c in $CONNS; do
    echo "| direct JSON $c | $(steps "direct-json-$c") |"
done
for c in $STREAM_CONNS; do
    echo "| direct SSE $c | $(steps "direct-sse-$c") |"
done
echo

# the goal: twice proxy_pass's rate at 8 and 32 connections, at no more
# than half its median latency
for c in 8 32; do
    case " $CONNS " in *" $c "*) ;; *) continue ;; esac
    rps=$(get "http-json-$c" req_per_s)
    p50=$(get "http-json-$c" latency_ms_p50)
    drps=$(get "direct-json-$c" req_per_s)
    awk -v c="$c" -v rps="$rps" -v p50="$p50" -v drps="$drps" \
        -v ref="${REF_PROXY[$c]}" -v refp50="${REF_PROXY_P50[$c]}" 'BEGIN {
        ok = rps >= 2 * ref && p50 <= refp50 / 2
        fmt = "- %d connections: %.1f req/s (goal >= %d; %.2fx"
        fmt = fmt " proxy_pass), p50 %.2f ms (goal <= %.2f): %s."
        fmt = fmt " Through nginx at %.0f%% of the engine\047s own"
        fmt = fmt " rate (%.1f req/s).\n"
        printf fmt, c, rps, 2 * ref, rps / ref, p50, refp50 / 2,
               (ok ? "met" : "NOT met"), (drps > 0 ? 100 * rps / drps : 0),
               drps
    }'
done

errors=0
for f in "$RUN"/*-json-*.txt "$RUN"/*-sse-*.txt; do
    [ -f "$f" ] || continue
    e=$(sed -n 's/^errors: //p' "$f")
    errors=$((errors + ${e:-1}))
done
if [ "$errors" -ne 0 ]; then
    echo
    echo "Errors: $errors (first: $(grep -h '^first_error:' "$RUN"/*.txt \
         | head -1))"
fi
