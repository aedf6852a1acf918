#!/usr/bin/env bash
# Runs report sweeps from the bundle (build.sh) on a machine without Node, all at once, each
# stopped after LIMIT seconds, and puts their folders (without checkpoints) and logs in
# $OUT/runs.tar.xz. Usage, from the project root there:
#   bash .sweep-bundle/on-device.sh LIMIT NAME:WORKERS...   (NAME: a config in sweeps/report/)
# e.g. `bash .sweep-bundle/on-device.sh 420 mlp-mnist:15`. Back here, untar it in the project
# root and run grng report: the sweeps' sessions name that machine in "What it took".
set -u
cd "$(dirname "$0")/.."
limit=${1:?usage: on-device.sh LIMIT NAME:WORKERS...}
shift
start=$(date +%s)
xz -dc .sweep-bundle/node.xz > /tmp/node && chmod +x /tmp/node
mkdir -p /tmp/grng-bundle && tar -xJf .sweep-bundle/pkg.tar.xz -C /tmp/grng-bundle
export LD_LIBRARY_PATH=/tmp/grng-bundle/grng/lib
grng="/tmp/node /tmp/grng-bundle/grng/bin/grng.js"
echo "$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), node $(/tmp/node --version)"
$grng train --dataset mnist-full --model mlp:784-32-10 --steps 3 2>&1 | grep '^grng: backend' | cut -c1-100
mkdir -p runs/device-logs
for job in "$@"; do
  name=${job%%:*} workers=${job##*:}
  (
    timeout -s TERM "$limit" $grng sweep "sweeps/report/$name.json" --workers "$workers" 2>&1 |
      grep -v '^var Module' | cut -c1-200 > "runs/device-logs/$name.log"
    echo "$name: exit ${PIPESTATUS[0]} at $(($(date +%s) - start)) s"
  ) &
done
wait
# A sweep stopped by timeout leaves its trial processes running: stop them before packing.
pkill -TERM -f 'grng/bin/grng.js train'
sleep 3
tar -cJf "$OUT/runs.tar.xz" --exclude=checkpoint runs/sweeps runs/device-logs
echo "done in $(($(date +%s) - start)) s"
