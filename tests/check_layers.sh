#!/usr/bin/env bash
# The include graph runs one way (docs/ARCHITECTURE.md): a file in src/X may include only
# files of its own layer or of lower ones, and only src/parallel includes src/dist. Each
# violation is a FAIL line naming the file, the include and both layers.
set -u
cd "$(dirname "$0")/.."
# layer of each directory (higher includes lower)
declare -A LAYER=([base]=0 [kernels]=1 [config]=1 [data]=1 [ops]=2 [moe]=2 [model]=3 [io]=4 [optim]=4
                  [dist]=5 [parallel]=6 [train]=7 [infer]=7 [serve]=7 [sim]=7 [cmd]=8)
fail=0; n=0
for f in src/*/*.c src/*/*.h src/moe.c; do
  case "$f" in src/moe.c) dir=cmd;; *) dir=$(basename "$(dirname "$f")");; esac
  own=${LAYER[$dir]:-}
  if [ -z "$own" ]; then echo "FAIL layers: $f is in src/$dir, which has no layer in tests/check_layers.sh"; fail=1; continue; fi
  while IFS= read -r inc; do
    n=$((n+1))
    case "$inc" in ../*/*) tdir=${inc#../}; tdir=${tdir%%/*};; */*) tdir=${inc%%/*};; *) tdir=$dir;; esac
    tl=${LAYER[$tdir]:-}
    if [ -z "$tl" ]; then echo "FAIL layers: $f includes \"$inc\" from an unknown directory"; fail=1
    elif [ "$tl" -gt "$own" ]; then echo "FAIL layers: $f ($dir, layer $own) includes \"$inc\" ($tdir, layer $tl)"; fail=1
    elif [ "$tdir" = dist ] && [ "$dir" != parallel ] && [ "$dir" != dist ]; then
      echo "FAIL layers: $f includes \"$inc\": only src/parallel may use src/dist"; fail=1
    fi
  done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f")
done
[ $fail -eq 0 ] && echo "PASS layers: $n includes in src/ run from higher layers to lower ones only; src/dist only under src/parallel"
exit $fail
