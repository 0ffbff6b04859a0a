#!/bin/bash
# Soak (make soak): SOAK_CONNS (64) concurrent streaming clients for
# SOAK_MINUTES (10) through nginx and the module to the engine on the
# shipped model, completions of 24..200 tokens.  Every SOAK_SAMPLE
# seconds it records the resident memory of the engine and of each nginx
# worker; at the end it checks that
#
#   - no request failed (loadgen's errors: status, error events, framing,
#     I/O, timeouts),
#   - no process grew after the warm-up (SOAK_WARMUP s, 60): the last
#     sample is within SOAK_SLACK_KB (1024) of the first,
#   - the engine is idle again: nothing running or waiting, no KV block
#     in use, every slot free, and it counted as many requests as were
#     sent, none failed or cancelled (read from its shared memory with
#     loadgen --direct SOCKET --stats; also nginx's llm_metrics where the
#     module serves it),
#
# prints a markdown section for bench/RESULTS.md on stdout (progress on
# stderr) and exits 0 when every check passed, 1 otherwise.  Everything
# runs under a temporary directory (kept with SOAK_KEEP=1).

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BUILD=${BUILD:-build}
make -s BUILD="$BUILD" engine module loadgen >&2
case $BUILD in
    /*) ;;
    *) BUILD=$ROOT/$BUILD ;;
esac

MINUTES=${SOAK_MINUTES:-10}
CONNS=${SOAK_CONNS:-64}
TOKENS=${SOAK_TOKENS:-24..200}
SAMPLE=${SOAK_SAMPLE:-5}
SLACK_KB=${SOAK_SLACK_KB:-1024}
DURATION=$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')
WARMUP=${SOAK_WARMUP:-$(( DURATION / 5 < 60 ? DURATION / 5 : 60 ))}
LOADGEN=$BUILD/loadgen

RUN=$(mktemp -d "${TMPDIR:-/tmp}/ngx_llm_soak.XXXXXX")

# shellcheck source=bench/stack.sh
. "$ROOT/bench/stack.sh"

LG_PID=
cleanup() {
    [ -n "$LG_PID" ] && kill -TERM "$LG_PID" 2>/dev/null
    stack_stop
    if [ "${SOAK_KEEP:-0}" = 1 ]; then
        echo "kept $RUN" >&2
    else
        rm -rf "$RUN"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
stack_start
WORKER_PIDS=$(stack_workers | tr '\n' ' ')
echo "engine pid $ENGINE_PID, nginx pid $NGINX_PID on $URL," \
     "workers $WORKER_PIDS; $CONNS streams for ${DURATION}s" >&2

rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# t, then one column per process
{
    printf 't engine'
    for w in $WORKER_PIDS; do printf ' worker-%s' "$w"; done
    printf '\n'
} > "$RUN/rss.txt"

sample() {
    local t=$1 w

    printf '%s %s' "$t" "$(rss_kb "$ENGINE_PID")"
    for w in $WORKER_PIDS; do printf ' %s' "$(rss_kb "$w")"; done
    printf '\n'
}

start=$(date +%s)
"$LOADGEN" -c "$CONNS" --stream --max-tokens "$TOKENS" -d "$DURATION" \
    --timeout 120 --interval 30 "$URL/v1/completions" \
    > "$RUN/loadgen.txt" 2> "$RUN/loadgen.err" &
LG_PID=$!

while kill -0 "$LG_PID" 2>/dev/null; do
    sample $(( $(date +%s) - start )) >> "$RUN/rss.txt"
    sleep "$SAMPLE"
done
lg_rc=0
wait "$LG_PID" || lg_rc=$?
LG_PID=
cat "$RUN/loadgen.err" >&2

# the engine finishes what it wrote before the workers read it: a moment
for i in $(seq 50); do
    "$LOADGEN" --direct "$SOCK" --stats > "$RUN/stats.txt"
    grep -q '^stat_running: 0$' "$RUN/stats.txt" && break
    sleep 0.1
done
sleep 1
"$LOADGEN" --direct "$SOCK" --stats > "$RUN/stats.txt"
sample "end" >> "$RUN/rss.txt"
if [ "$HAVE_METRICS" = 1 ]; then
    curl -s "$URL/metrics" > "$RUN/metrics.txt" || true
fi
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

get() {
    sed -n "s/^$2: //p" "$RUN/$1" | head -1
}

# --- checks ------------------------------------------------------------

fail=0
check() {
    local what=$1 ok=$2
    if [ "$ok" = 1 ]; then
        echo "- [x] $what"
    else
        echo "- [ ] $what: FAILED"
        fail=1
    fi
}

echo "### Soak: $CONNS streams for $MINUTES min, $(date -u +%Y-%m-%d)"
echo
echo "Machine: $(stack_machine)."
echo "The engine, nginx ($WORKERS workers) and the load generator share it"
echo "(load average before $load_before, after $load_after)."
echo "Commit $(stack_commit).  \`make soak\`"
echo "(\`bench/soak.sh\`): \`loadgen -c $CONNS --stream --max-tokens $TOKENS"
echo "-d $DURATION\`, \`temperature 0\`, prompt \"Once upon a time\"; RSS"
echo "sampled every $SAMPLE s, warm-up $WARMUP s."
echo
echo "| requests | errors | req/s | tokens/s | p50 / p99 ms | TTFT p50 / p99 ms | ITL p50 / p99 ms |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
echo "| $(get loadgen.txt requests_completed) | $(get loadgen.txt errors)" \
     "| $(get loadgen.txt req_per_s) | $(get loadgen.txt tokens_per_s)" \
     "| $(get loadgen.txt latency_ms_p50) / $(get loadgen.txt latency_ms_p99)" \
     "| $(get loadgen.txt ttft_ms_p50) / $(get loadgen.txt ttft_ms_p99)" \
     "| $(get loadgen.txt itl_ms_p50) / $(get loadgen.txt itl_ms_p99) |"
echo
echo "Resident memory (kB) after the warm-up: the first and last sample,"
echo "the largest, the growth over all of it and over its second half"
echo "(a leak keeps growing; pages touched for the first time level off),"
echo "and once the load has stopped."
echo
echo "| process | first | last | max | growth | growth, 2nd half | idle after |"
echo "|---|---:|---:|---:|---:|---:|---:|"

# per column, over the samples with t >= WARMUP (and the idle one, "end")
awk -v warm="$WARMUP" -v slack="$SLACK_KB" '
    NR == 1 { for (i = 2; i <= NF; i++) name[i] = $i; n = NF; next }
    $1 == "end" { for (i = 2; i <= n; i++) idle[i] = $i; next }
    $1 >= warm {
        k++
        for (i = 2; i <= n; i++) {
            v[i, k] = $i
            if ($i > max[i]) max[i] = $i
        }
    }
    END {
        if (k == 0) exit 1
        h = int((k + 1) / 2)
        for (i = 2; i <= n; i++) {
            printf "| %s | %d | %d | %d | %+d | %+d | %d |\n", name[i],
                   v[i, 1], v[i, k], max[i], v[i, k] - v[i, 1],
                   v[i, k] - v[i, h], idle[i]
            if (v[i, k] - v[i, 1] > slack) bad = 1
        }
        exit bad
    }' "$RUN/rss.txt" > "$RUN/rss.md" && mem_ok=1 || mem_ok=0
cat "$RUN/rss.md"
echo

errors=$(get loadgen.txt errors)
issued=$(get loadgen.txt requests_issued)
echo "Engine counters at the end (its shared memory):"
echo
echo '```'
grep -E '^(stat_(requests|requests_failed|running|waiting|cancelled|reclaimed|kv_used|completion_tokens|preemptions)|slots(_free)?):' \
    "$RUN/stats.txt"
echo '```'
echo

s() { get stats.txt "$1"; }

check "no errors ($errors of $(get loadgen.txt requests_issued) requests; loadgen exit $lg_rc)" \
    "$([ "$errors" = 0 ] && [ "$lg_rc" = 0 ] && echo 1 || echo 0)"
check "no growth after warm-up (last - first <= $SLACK_KB kB in every process)" \
    "$mem_ok"
check "nothing running, waiting or holding KV (running $(s stat_running), waiting $(s stat_waiting), kv_used $(s stat_kv_used))" \
    "$([ "$(s stat_running)" = 0 ] && [ "$(s stat_waiting)" = 0 ] \
       && [ "$(s stat_kv_used)" = 0 ] && echo 1 || echo 0)"
check "every slot free ($(s slots_free) of $(s slots))" \
    "$([ "$(s slots_free)" = "$(s slots)" ] && echo 1 || echo 0)"
check "the engine took every request sent ($(s stat_requests) of $issued), none failed or cancelled ($(s stat_requests_failed), $(s stat_cancelled))" \
    "$([ "$(s stat_requests)" = "$issued" ] \
       && [ "$(s stat_requests_failed)" = 0 ] \
       && [ "$(s stat_cancelled)" = 0 ] && echo 1 || echo 0)"

if [ "$HAVE_METRICS" = 1 ]; then
    busy=$(awk '/^llm_engine_slots\{/ && !/state="free"/ { s += $2 }
                /^llm_queue_waiting\{/ { s += $2 }
                END { print s + 0 }' "$RUN/metrics.txt")
    check "nginx's llm_metrics: no slot busy, nothing queued in nginx" \
        "$([ "$busy" = 0 ] && echo 1 || echo 0)"
fi

bad_log=$(grep -cE '\[(error|crit|alert|emerg)\]' "$RUN/error.log" || true)
check "no [error], [crit], [alert] or [emerg] in nginx's error log ($bad_log)" \
    "$([ "$bad_log" = 0 ] && echo 1 || echo 0)"

if [ "$errors" != 0 ]; then
    echo
    echo "First error: $(get loadgen.txt first_error)"
fi

exit "$fail"
