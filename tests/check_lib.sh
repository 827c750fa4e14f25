# Shared by the shell suites: PASS/FAIL lines and their counts, and expect_fail. Sourced
# after T (a temporary directory) is set.
pass=0; fail=0
ok()  { echo "PASS $1"; pass=$((pass+1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail+1)); }

# expect_fail NAME PATTERN CMD...: non-zero exit, exactly one stderr line, containing PATTERN
expect_fail() {
  local name=$1 pat=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  local lines; lines=$(wc -l <"$T/err")
  if [ $rc -eq 0 ]; then bad "$name" "exit 0"; return; fi
  if [ $rc -ge 128 ]; then bad "$name" "crashed (rc $rc): $(head -c 300 "$T/err")"; return; fi
  if [ "$lines" -ne 1 ]; then bad "$name" "$lines lines on stderr: $(head -c 300 "$T/err")"; return; fi
  if ! grep -qF -- "$pat" "$T/err"; then bad "$name" "message lacks '$pat': $(cat "$T/err")"; return; fi
  ok "$name ($(cat "$T/err"))"
}
