#!/usr/bin/env bash
# Installs what moe.c needs to build and test, from Debian's packages, when it is missing.
# Safe to run again: it does nothing when everything is there.
#   deps.sh         build, run and test (make deps, make test)
#   deps.sh build   build and run (make demo)
#   deps.sh check   installs nothing: prints one line naming the packages that hold what the
#                   build lacks, or nothing (make's build; BLASDIR and BLASINC from the Makefile)
set -euo pipefail
if [ "${1:-}" = check ]; then
  lack=(); pkgs=()
  miss() { lack+=("$1"); [[ " ${pkgs[*]} " = *" $2 "* ]] || pkgs+=("$2"); }
  command -v gcc >/dev/null || miss gcc build-essential
  command -v mpicc >/dev/null || miss mpicc openmpi-bin
  mpi_h=0
  for d in $(mpicc --showme:incdirs 2>/dev/null) /usr/lib/x86_64-linux-gnu/openmpi/include; do
    [ -e "$d/mpi.h" ] && mpi_h=1
  done
  [ $mpi_h -eq 1 ] || miss mpi.h libopenmpi-dev
  [ -e "$BLASINC/cblas.h" ] || miss "$BLASINC/cblas.h" libopenblas-openmp-dev
  [ -e "$BLASDIR/libopenblas.so" ] || miss "$BLASDIR/libopenblas.so" libopenblas-openmp-dev
  [ -e /usr/include/cjson/cJSON.h ] || miss /usr/include/cjson/cJSON.h libcjson-dev
  # Hugging Face tokenizer.json: PCRE2 for the pre-tokenizers' regexes, utf8proc for NFC
  [ -e /usr/include/pcre2.h ] || miss /usr/include/pcre2.h libpcre2-dev
  [ -e /usr/include/utf8proc.h ] || miss /usr/include/utf8proc.h libutf8proc-dev
  # moe serve's HTTP server
  [ -e /usr/include/microhttpd.h ] || miss /usr/include/microhttpd.h libmicrohttpd-dev
  # the linker's search path, as gcc sees it (it prints the bare name when it finds nothing)
  if command -v gcc >/dev/null; then
    [[ $(gcc -print-file-name=libcjson.so) = */* ]] || miss libcjson.so libcjson-dev
    [[ $(gcc -print-file-name=libpcre2-8.so) = */* ]] || miss libpcre2-8.so libpcre2-dev
    [[ $(gcc -print-file-name=libutf8proc.so) = */* ]] || miss libutf8proc.so libutf8proc-dev
    [[ $(gcc -print-file-name=libmicrohttpd.so) = */* ]] || miss libmicrohttpd.so libmicrohttpd-dev
  fi
  [ ${#lack[@]} -eq 0 ] || echo "cannot build: no ${lack[*]}; install Debian's ${pkgs[*]} (apt-get install ${pkgs[*]}, or make deps)"
  exit 0
fi
# "build": what building and running needs (make, make demo); default: also the test oracle's
pkgs=(build-essential libopenblas-openmp-dev libcjson-dev libpcre2-dev libutf8proc-dev libmicrohttpd-dev libopenmpi-dev openmpi-bin)
# the tests also use pgrep (procps) and, for the emulated hosts, ip and tc (iproute2); the
# fuzzing harnesses (make test's short pass, make fuzz) clang with libFuzzer and the
# sanitizers' runtimes (libclang-rt-dev); a plain make needs neither
[ "${1:-all}" = build ] || pkgs+=(python3 python3-numpy python3-torch procps iproute2 clang libclang-rt-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Intel MKL (Debian's libmkl-rt, in the non-free component): gemm loads it at run time on
# Intel CPUs, where it is 10-20% faster than OpenBLAS on our shapes; optional, OpenBLAS
# stays the fallback when it is absent
mkl=0
dpkg-query -W -f='${Status}' libmkl-rt 2>/dev/null | grep -q 'install ok installed' || mkl=1
[ ${#missing[@]} -eq 0 ] && [ $mkl -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if [ $mkl -eq 1 ]; then
  src=/etc/apt/sources.list.d/moe-debian-non-free.sources
  cand=$(apt-cache policy libmkl-rt 2>/dev/null | awk '/Candidate:/ {print $2}')
  if { [ -z "$cand" ] || [ "$cand" = "(none)" ]; } && [ -r /etc/os-release ] && . /etc/os-release && [ "${ID:-}" = debian ] \
     && [ -n "${VERSION_CODENAME:-}" ] && [ ! -e "$src" ]; then
    echo "deps.sh: adding Debian's non-free component ($src) for libmkl-rt" >&2
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$VERSION_CODENAME" | $SUDO tee "$src" >/dev/null
    $SUDO apt-get update -qq || true
  fi
  echo "deps.sh: installing libmkl-rt (optional: OpenBLAS is used without it)" >&2
  $SUDO apt-get install -y -qq --no-install-recommends libmkl-rt >&2 || echo "deps.sh: libmkl-rt not installed; gemm uses OpenBLAS" >&2
fi
