#!/usr/bin/env bash
# The Celery test uses Redis as its broker: the one on 127.0.0.1:6379 when it answers, else it starts
# Debian's redis-server itself on a free port. Installs redis-server with apt when neither is there.
set -euo pipefail
if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then exit 0; fi
if command -v redis-server >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's redis-server for the Celery test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
else
  echo "embwarden: the Celery test needs Redis on 127.0.0.1:6379 or redis-server: sudo apt-get install redis-server" >&2
  exit 1
fi
