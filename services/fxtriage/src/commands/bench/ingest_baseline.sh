#!/bin/sh
# The baseline of `fxtriage bench ingest`: dcmtk's storescp receiving the same
# files from the same senders. storescp listens on every interface, so this
# runs in a private network namespace (`unshare --net --pid`), on its own
# loopback. storescp writes each instance to a file and answers; it does not
# fsync.
#
# Usage: ingest_baseline.sh PORT OUT_DIR DIR...   (one storescu per DIR)
# Prints "elapsed_ns N": from the first storescu's start to the last one's end.
set -eu
port=$1
out=$2
shift 2
ip link set lo up
TCP_NODELAY=1 storescp --fork -od "$out" "$port" &
tries=0
until echoscu 127.0.0.1 "$port" >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -le 400 ] || { echo "storescp did not start" >&2; exit 3; }
  sleep 0.05
done
start=$(date +%s%N)
pids=""
for dir in "$@"; do
  TCP_NODELAY=1 storescu -aec FXTRIAGE -aet BENCH +sd 127.0.0.1 "$port" "$dir" &
  pids="$pids $!"
done
status=0
for pid in $pids; do wait "$pid" || status=1; done
end=$(date +%s%N)
echo "elapsed_ns $((end - start))"
exit "$status"
