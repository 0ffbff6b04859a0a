#!/bin/sh
# Installs the Debian packages ngx_llm needs to build, test and run, when
# they are missing.  As root it runs apt-get; otherwise it prints the
# line to run.

PKGS="gcc make perl nginx nginx-dev libjansson-dev libhiredis-dev
      libpcre2-dev zlib1g-dev libssl-dev redis-server curl"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
         | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages:$missing"
    echo "run: sudo apt-get update && sudo apt-get install -y$missing"
    exit 1
fi

echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing
