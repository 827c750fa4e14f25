# Shared by the MPI suites (tests/test_dist.sh, tests/test_pp.sh): PASS/FAIL lines (check_lib.sh), mpirun
# on this machine, and the comparison of two runs' logged losses. Sourced after T is set.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
. "$(dirname "${BASH_SOURCE[0]}")/check_lib.sh"
run() { mpirun -np "$1" --oversubscribe -x OMP_NUM_THREADS=1 "${@:2}"; }

losses() { grep -o '"loss":[-0-9.e]*' "$1/log.jsonl" | cut -d: -f2; }
# same_losses NAME A B N [TOL]: N lines each, every pair within relative TOL (1e-6: exact
# storage, where only the order of summation differs)
same_losses() {
  local r
  r=$(paste <(losses "$2") <(losses "$3") | awk -v n="$4" -v tol="${5:-1e-6}" '
      { d = $1 - $2; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (r > m) m = r; c++ }
      END { if (c != n) print "lines " c " of " n; else if (m > tol) print "max rel " m " > " tol; else printf "ok %.1e\n", m }')
  case "$r" in ok*) ok "$1 (max rel ${r#ok })";; *) bad "$1" "$r";; esac
}
