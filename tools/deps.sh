#!/bin/sh
# Installs what ngx_llm needs to build, test and run, when it is missing
# (g++ for the CUDA emulator the tests run, t/gpu/emu/):
# Debian packages, then the openai Python package the client tests use
# (t/027-openai-client.t; that test is skipped without it).  As root it
# runs apt-get and pip; otherwise it prints the lines to run.

PKGS="gcc g++ make perl nginx nginx-dev libjansson-dev libhiredis-dev
      libpcre2-dev zlib1g-dev libssl-dev redis-server curl
      python3 python3-pip"

# the client the tests drive nginx with; PYTHON picks the interpreter
OPENAI="openai==3.57.0"
PYTHON="${PYTHON:-python3}"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
         | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages:$missing"
        echo "run: sudo apt-get update && sudo apt-get install -y$missing"
        exit 1
    fi

    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq \
        && apt-get install -y -qq --no-install-recommends $missing \
        || exit 1
fi

if "$PYTHON" -c 'import openai' 2>/dev/null; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing: the openai Python package (t/027-openai-client.t skips)"
    echo "run: $PYTHON -m pip install --user '$OPENAI'"
    exit 0
fi

echo "installing: $OPENAI for $PYTHON"

# Debian's own python3 is "externally managed" and wants the flag
"$PYTHON" -m pip install -q "$OPENAI" 2>/dev/null \
    || "$PYTHON" -m pip install -q --break-system-packages "$OPENAI" \
    || echo "warning: $OPENAI did not install; the openai client test" \
            "will be skipped"

exit 0
