#!/usr/bin/env bash
# Installs what moe.c needs to build and test, from Debian's packages, when it is missing.
# Safe to run again: it does nothing when everything is there.
set -euo pipefail
# "build": what building and running needs (make, make demo); default: also the test oracle's
pkgs=(build-essential libopenblas-openmp-dev libcjson-dev libopenmpi-dev openmpi-bin)
# the tests also use pgrep (procps) and, for the emulated hosts, ip and tc (iproute2)
[ "${1:-all}" = build ] || pkgs+=(python3 python3-numpy python3-torch procps iproute2)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps.sh: installing ${missing[*]}" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
