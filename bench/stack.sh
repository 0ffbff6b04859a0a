# Sourced by bench/http.sh and bench/soak.sh: the serving stack for a
# benchmark.  stack_start runs `llm-engine serve` on the shipped model and
# nginx with the module in front of it (a configuration like
# conf/nginx.conf, WORKERS worker processes) on a free port, everything
# under the scratch directory RUN; stack_stop stops both.
#
# in:   ROOT, BUILD (absolute), RUN, WORKERS (nproc), ENGINE_ARGS (extra
#       words for llm-engine serve), NGINX (/usr/sbin/nginx)
# out:  SOCK PORT URL ENGINE_PID NGINX_PID HAVE_METRICS

NGINX=${NGINX:-/usr/sbin/nginx}
WORKERS=${WORKERS:-$(nproc)}
ENGINE_ARGS=${ENGINE_ARGS:-}
ENGINE_PID=
NGINX_PID=

stack_free_port() {
    perl -MIO::Socket::INET -e \
        'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1",
                                     LocalPort => 0)->sockport'
}

# writes $RUN/nginx.conf; $1 = 1 to serve llm_metrics on /metrics
stack_nginx_conf() {
    local user="" metrics=""

    # the engine's socket is 0660 and ours: as root, workers must stay root
    [ "$(id -u)" = 0 ] && user="user root;"
    [ "$1" = 1 ] && metrics="location = /metrics { llm_metrics; }"

    cat > "$RUN/nginx.conf" <<CONF
load_module $BUILD/ngx_http_llm_module.so;
$user
worker_processes $WORKERS;
pid $RUN/nginx.pid;
error_log $RUN/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log $RUN/access.log;

    client_body_temp_path $RUN/body;
    proxy_temp_path $RUN/proxy;
    fastcgi_temp_path $RUN/fastcgi;
    uwsgi_temp_path $RUN/uwsgi;
    scgi_temp_path $RUN/scgi;

    llm_engine default unix:$SOCK;
    llm_max_tokens 256;
    llm_timeout 60s;

    server {
        listen 127.0.0.1:$PORT;

        client_max_body_size 1m;
        client_body_buffer_size 1m;

        location /v1/ {
            llm_pass default;
        }

        $metrics
    }
}
CONF
}

stack_start() {
    local i

    SOCK=$RUN/engine.sock
    PORT=$(stack_free_port)
    URL=http://127.0.0.1:$PORT

    # shellcheck disable=SC2086
    "$BUILD/llm-engine" serve --socket "$SOCK" \
        --model "stories=$ROOT/models/stories260K.gguf" \
        --log-level warn $ENGINE_ARGS > "$RUN/engine.log" 2>&1 &
    ENGINE_PID=$!

    for i in $(seq 200); do
        [ -S "$SOCK" ] && break
        if ! kill -0 "$ENGINE_PID" 2>/dev/null; then
            echo "engine exited:" >&2
            cat "$RUN/engine.log" >&2
            return 1
        fi
        sleep 0.05
    done

    # llm_metrics where the module has it
    HAVE_METRICS=1
    stack_nginx_conf 1
    if ! "$NGINX" -t -p "$RUN" -c "$RUN/nginx.conf" > /dev/null 2>&1; then
        HAVE_METRICS=0
        stack_nginx_conf 0
    fi

    "$NGINX" -p "$RUN" -c "$RUN/nginx.conf" -g 'daemon off;' \
        > "$RUN/nginx.out" 2>&1 &
    NGINX_PID=$!

    for i in $(seq 200); do
        if curl -sf -o /dev/null "$URL/v1/models"; then
            return 0
        fi
        if ! kill -0 "$NGINX_PID" 2>/dev/null; then
            echo "nginx exited:" >&2
            cat "$RUN/nginx.out" "$RUN/error.log" >&2
            return 1
        fi
        sleep 0.05
    done

    echo "the stack did not come up; see $RUN" >&2
    return 1
}

# the pids of nginx's worker processes
stack_workers() {
    ps -o pid= --ppid "$NGINX_PID" | tr -d ' '
}

# stops nginx (gracefully) and the engine (SIGTERM), then waits for both
stack_stop() {
    local pid i

    for pid in $NGINX_PID:QUIT $ENGINE_PID:TERM; do
        [ "${pid%%:*}" = "" ] && continue
        kill -"${pid##*:}" "${pid%%:*}" 2>/dev/null || continue
        for i in $(seq 100); do
            kill -0 "${pid%%:*}" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "${pid%%:*}" 2>/dev/null || true
        wait "${pid%%:*}" 2>/dev/null || true
    done
    NGINX_PID=
    ENGINE_PID=
}

# the machine, for RESULTS.md
stack_machine() {
    local cpu fam model hv

    cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
    fam=$(lscpu | sed -n 's/^CPU family: *//p' | head -1)
    model=$(lscpu | sed -n 's/^Model: *//p' | head -1)
    hv=$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1)
    echo "$cpu (family $fam, model $model), $(nproc) CPUs${hv:+ ($hv guest)}," \
         "$(free -g | awk '/^Mem:/ { print $2 }') GB"
}

# the commit measured, with a mark when the tree differs from it
stack_commit() {
    local c

    c=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if ! git -C "$ROOT" diff --quiet HEAD -- engine ngx_llm_module config \
         2>/dev/null
    then
        c="$c+local changes"
    fi
    echo "$c"
}
