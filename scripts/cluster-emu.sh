#!/usr/bin/env bash
# A cluster of N emulated hosts on this one machine, for the distributed tests and benchmarks.
#
#   scripts/cluster-emu.sh up N [--rate R]     N network namespaces moe-h1..moe-hN, each with one
#                                              interface (10.77.0.i/24) on a bridge, its link
#                                              limited to R each way by tc tbf (default 10gbit;
#                                              this kernel has no netem, so no latency is added)
#   scripts/cluster-emu.sh down                removes them (also done by run, unless --keep)
#   scripts/cluster-emu.sh run N [--rate R] [--slots S] [--keep] -- CMD...
#                                              brings up N hosts, runs `mpirun` from host 1 with
#                                              S ranks per host (default 1) over TCP between the
#                                              hosts, shared memory only within one, then CMD is
#                                              what mpirun starts: run 2 --slots 2 -- ./moe train ...
#
# mpirun reaches the other hosts through scripts/netns-agent (its "rsh"), which starts Open
# MPI's daemon inside that host's namespace with its own host name. Only addresses inside
# these namespaces are used. Needs root, iproute2 and Open MPI.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BR=moe-br0
NET=10.77.0

die() { echo "cluster-emu: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"; }

down() {
  for ns in $(ip netns list 2>/dev/null | awk '/^moe-h[0-9]+/ {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  # the bridge-side ends of the veth pairs go with their peers, but not always at once
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^mh[0-9]+(@|$)' | cut -d@ -f1); do
    ip link del "$l" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
}

up() {
  local n=$1 rate=$2
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "host count must be 1..200, got '$n'"
  need_root
  down
  ip link add "$BR" type bridge
  ip link set "$BR" up
  for i in $(seq 1 "$n"); do
    local ns=moe-h$i
    ip netns add "$ns"
    ip link add "mh$i" type veth peer name eth0 netns "$ns"
    ip link set "mh$i" master "$BR" up
    ip netns exec "$ns" ip addr add "$NET.$i/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip link set lo up
    # the host's link, both ways: its egress inside the namespace, its ingress on the bridge port
    ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 512kb latency 200ms
    tc qdisc add dev "mh$i" root tbf rate "$rate" burst 512kb latency 200ms
  done
  echo "cluster-emu: $n hosts up ($NET.1..$NET.$n, $rate per link)" >&2
}

cmd=${1:-}; shift || true
rate=10gbit; slots=1; keep=0
case "$cmd" in
  up)
    n=${1:-}; shift || true
    while [ $# -gt 0 ]; do case $1 in --rate) rate=$2; shift 2;; *) die "unknown option $1";; esac; done
    up "$n" "$rate" ;;
  down) need_root; down ;;
  run)
    n=${1:-}; shift || true
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
      case $1 in
        --rate) rate=$2; shift 2;;
        --slots) slots=$2; shift 2;;
        --keep) keep=1; shift;;
        *) die "unknown option $1 (the command goes after --)";;
      esac
    done
    [ "${1:-}" = "--" ] || die "usage: cluster-emu.sh run N [--rate R] [--slots S] [--keep] -- CMD..."
    shift
    [ $# -gt 0 ] || die "no command after --"
    up "$n" "$rate"
    [ $keep -eq 1 ] || trap down EXIT
    hosts=""
    for i in $(seq 1 "$n"); do hosts+="${hosts:+,}$NET.$i:$slots"; done
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    set +e
    # --bind-to none: every emulated host is this one machine, and mpirun binds each host's
    # first rank to core 0, so without it all the ranks would share one core
    ip netns exec moe-h1 unshare --uts sh -c 'hostname moe-h1; exec "$@"' sh \
      mpirun --host "$hosts" -np $((n * slots)) \
        --mca plm_rsh_agent "$HERE/netns-agent" \
        --mca oob_tcp_if_include "$NET.0/24" --mca btl_tcp_if_include "$NET.0/24" \
        --mca btl self,vader,tcp --bind-to none \
        -x OMP_NUM_THREADS -x PATH \
        "$@"
    rc=$?
    exit $rc ;;
  *) die "usage: cluster-emu.sh up N [--rate R] | down | run N [--rate R] [--slots S] [--keep] -- CMD..." ;;
esac
