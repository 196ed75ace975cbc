#!/usr/bin/env bash
# The general-English attacker corpus (audits/general.py) reads real text that Debian packages ship:
# WordNet (wordnet-base), GCIDE quotations (dict-gcide) and fortunes (fortunes, fortunes-min).
# Installs the missing ones with apt when we are root; otherwise says what to do.
set -euo pipefail
declare -A FILES=([wordnet-base]=/usr/share/wordnet/data.noun [dict-gcide]=/usr/share/dictd/gcide.dict.dz
                  [fortunes]=/usr/share/games/fortunes/wisdom [fortunes-min]=/usr/share/games/fortunes/fortunes)
missing=()
for package in "${!FILES[@]}"; do
  [ -e "${FILES[$package]}" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's ${missing[*]} for the general-English attacker corpus"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "embwarden: the general-English corpus needs Debian's ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
