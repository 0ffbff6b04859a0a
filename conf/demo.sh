#!/bin/sh
# make demo: the engine on the shipped model and nginx with conf/nginx.conf
# on 127.0.0.1:8080, in the foreground; Ctrl-C stops both.

set -e

root=$(cd "$(dirname "$0")/.." && pwd)
run="$root/build/demo"
sock="$run/engine.sock"
port=${LLM_DEMO_PORT:-8080}

mkdir -p "$run/logs"
sed -e "s|@MODULE@|$root/build/ngx_http_llm_module.so|g" \
    -e "s|@SOCKET@|$sock|g" \
    -e "s|@PREFIX@|$run|g" \
    -e "s|@PORT@|$port|g" \
    "$root/conf/nginx.conf" > "$run/nginx.conf"

"$root/build/llm-engine" serve --socket "$sock" \
    --model "stories=$root/models/stories260K.gguf" &
engine=$!

nginx_pid=""
stop() {
    trap - INT TERM EXIT
    [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null
    kill -TERM "$engine" 2>/dev/null
    wait 2>/dev/null
    exit 0
}
trap stop INT TERM EXIT

/usr/sbin/nginx -p "$run" -c "$run/nginx.conf" -g "daemon off;" &
nginx_pid=$!

# wait until a request goes through
i=0
until curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$engine" 2>/dev/null \
       || ! kill -0 "$nginx_pid" 2>/dev/null; then
        echo "demo: did not come up; see $run/logs" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<MSG

ngx_llm is serving models/stories260K.gguf as "stories" on 127.0.0.1:$port.
Try:

  curl -s http://127.0.0.1:$port/v1/completions -H 'Content-Type: application/json' \\
       -d '{"model": "stories", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}'

Ctrl-C stops it.
MSG

wait "$nginx_pid"
