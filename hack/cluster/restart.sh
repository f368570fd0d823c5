#!/usr/bin/env bash
# restart.sh COMPONENT [--stop-for SECONDS] [--signal SIGNAL] [--grace SECONDS] [--timeout SECONDS]
#
# Stop one component of the local cluster and start it again exactly as it ran: the command line,
# environment and working directory are read from /proc/PID before it is stopped; it comes back
# under setsid with the same log file (appended) and PID file, as local-up.sh starts it. Then waits
# until the component is healthy again.
#
#   COMPONENT      a name with a PID file in $PIDS: containerd, etcd, kube-apiserver,
#                  kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#   --stop-for S   stay stopped S seconds before starting again (default 0)
#   --signal SIG   how to stop it (default TERM; KILL for a crash)
#   --grace S      SIGKILL if it still runs S seconds after SIG (default 30; kube-apiserver 1.20
#                  stops listening at once on SIGTERM but then takes the whole 30 s to exit)
#   --timeout S    how long to wait for health after the start (default 120)
#
# Disruptive for everyone on this machine's cluster: hold the lock tests/chaos/disrupt.py takes
# (/tmp/codetask-cluster-disrupt.lock). This script takes it itself unless CODETASK_DISRUPT_LOCK_HELD=1
# says the caller holds it already. local-up.sh waits for this lock (shared) before it judges the
# cluster: without that, a `cluster.sh up` during the restart took the cluster for dead and wiped it.
#
# Stdout: one line of key=value (component, old_pid, new_pid, stopped_at, started_at, healthy_at
# as epoch seconds, down_seconds from the stop to health). Progress goes to stderr.
source "$(dirname "$0")/lib.sh"

usage() {
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

component=${1:-}
[[ -n $component && $component != -* ]] || usage
shift
stop_for=0 signal=TERM grace=30 timeout=120
while (($#)); do
  case $1 in
    --stop-for) stop_for=${2:?}; shift 2 ;;
    --signal) signal=${2:?}; shift 2 ;;
    --grace) grace=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done

LOCK_FILE=/tmp/codetask-cluster-disrupt.lock
if [[ ${CODETASK_DISRUPT_LOCK_HELD:-} != 1 ]]; then
  exec 9>>"$LOCK_FILE"
  log "waiting for $LOCK_FILE"
  flock -x 9
fi

pidfile=$PIDS/$component.pid
[[ -f $pidfile ]] || die "find $component" "" "no PID file $pidfile"
logfile=$LOGS/$component.log
old_pid=$(component_pid "$component") \
  || die "find $component" "$logfile" "PID $(<"$pidfile") ($pidfile) is not $component any more"

# Everything needed to start it again, read while it still runs.
mapfile -d '' cmd <"/proc/$old_pid/cmdline"
mapfile -d '' environment <"/proc/$old_pid/environ"
workdir=$(readlink "/proc/$old_pid/cwd")
((${#cmd[@]})) || die "read $component" "" "PID $old_pid has an empty command line (a zombie?)"

# healthy: exit 0 when the component answers as healthy.
healthy() {
  case $component in
    kube-apiserver) kubectl_admin get --raw=/readyz ;;
    etcd) curl -fsS "http://127.0.0.1:$ETCD_PORT/health" ;;
    containerd) ctr --address "$CTR_SOCK" version ;;
    kubelet)
      curl -fsS http://127.0.0.1:10248/healthz \
        && [[ $(kubectl_admin get node "$NODE_NAME" \
          -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
      ;;
    kube-proxy) curl -fsS http://127.0.0.1:10256/healthz ;;
    kube-controller-manager) curl -kfsS https://127.0.0.1:10257/healthz ;;
    kube-scheduler) curl -kfsS https://127.0.0.1:10259/healthz ;;
    *) kill -0 "$new_pid" ;;
  esac
}

# gone PID: the process has exited (a zombie waiting to be reaped counts as gone).
gone() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [[ -z $state || $state == Z ]]
}

now() { date +%s.%N; }

log "stopping $component (PID $old_pid) with SIG$signal"
stopped_at=$(now)
kill -s "$signal" "$old_pid"
killed=0
until gone "$old_pid"; do
  if ((!killed)) && awk -v a="$stopped_at" -v b="$(now)" -v g="$grace" 'BEGIN {exit !(b - a >= g)}'; then
    log "$component still running $grace s after SIG$signal: SIGKILL"
    kill -s KILL "$old_pid" 2>/dev/null || true
    killed=1
  fi
  sleep 0.1
done
log "$component stopped after $(awk -v a="$stopped_at" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}') s"
sleep "$stop_for"

log "starting $component again (log: $logfile)"
started_at=$(now)
cd "$workdir"
# 9>&-: the component must not inherit (and so hold) the disruption lock.
setsid env -i "${environment[@]}" "${cmd[@]}" >>"$logfile" 2>&1 </dev/null 9>&- &
new_pid=$!
echo "$new_pid" >"$pidfile"
cd - >/dev/null

end=$((SECONDS + timeout))
until healthy >/dev/null 2>&1; do
  gone "$new_pid" && die "restart $component" "$logfile" "$component exited after the start"
  ((SECONDS < end)) || die "restart $component" "$logfile" "not healthy ${timeout} s after the start"
  sleep 0.2
done
healthy_at=$(now)
down=$(awk -v a="$stopped_at" -v b="$healthy_at" 'BEGIN {printf "%.2f", b - a}')
log "$component healthy again (PID $new_pid), $down s after the stop"
echo "component=$component old_pid=$old_pid new_pid=$new_pid stopped_at=$stopped_at" \
  "started_at=$started_at healthy_at=$healthy_at down_seconds=$down"
