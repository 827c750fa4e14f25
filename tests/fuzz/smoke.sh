#!/usr/bin/env bash
# make test's short fuzzing pass: each harness of build/fuzz/ for at most FUZZ_SMOKE_SECONDS
# (15) or 600000 inputs, starting from its seeds (tests/fuzz/corpus/X, only read: what it finds
# goes to a temporary directory). One PASS/FAIL line per harness; a crash's input is kept in
# build/fuzz/ (its name is in the FAIL line): add it to the corpus once fixed.
set -u
cd "$(dirname "$0")/../.."
secs=${FUZZ_SMOKE_SECONDS:-15}
fail=0
for f in build/fuzz/fuzz_*; do
  [ -x "$f" ] || continue
  h=$(basename "$f")
  work=$(mktemp -d /tmp/moe-fuzz.XXXXXX)
  "$f" -max_total_time="$secs" -runs=600000 -dict=tests/fuzz/json.dict -artifact_prefix=build/fuzz/ \
       "$work" "tests/fuzz/corpus/$h" >"$work.log" 2>&1
  rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$work.log")
  cov=$(grep -o 'cov: [0-9]*' "$work.log" | tail -1)
  if [ $rc -eq 0 ]; then echo "PASS fuzz $h: ${runs:-?} inputs, $cov, no crash"
  else echo "FAIL fuzz $h: exit $rc: $(grep -m1 -E 'ERROR|runtime error|fuzz:' "$work.log") ($(grep -o 'build/fuzz/[a-z]*-[0-9a-f]*' "$work.log" | tail -1))"; fail=1; fi
  rm -rf "$work" "$work.log"
done
exit $fail
