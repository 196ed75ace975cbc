#!/usr/bin/env bash
# The report test opens report.html in a real headless Chromium: Debian's, at /usr/bin/chromium.
# Installs it with apt when it is missing and we are root; otherwise says what to do.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the report test"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "embwarden: the tests need Debian's chromium at /usr/bin/chromium: sudo apt-get install chromium" >&2
  exit 1
fi
