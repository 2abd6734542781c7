#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Fixture of the MPI suite: "before" records the shared-memory segments that
# exist; "after" (run once every MPI test is done) fails if the suite left a
# segment in /dev/shm or a test process running.
set -u
state="$2"
case "$1" in
before)
    ls -1 /dev/shm > "$state"
    ;;
after)
    fail=0
    new=$(ls -1 /dev/shm | grep -vxF -f "$state" || true)
    if [[ -n "$new" ]]; then
        echo "segments left in /dev/shm: $new"
        fail=1
    fi
    # Live test processes (not zombies: a job that just failed may take a
    # moment to be reaped by its launcher), given a few seconds to go.
    names='conform|locktest|sharedtest|grouptest|servicetest|cxx|sluice-demo|sluice-bench|sluice-groupbe|sluice-soak|sluice-lockbenc|sluice-info|sluice-hlt|sluice-monitor'
    live() { pgrep -x "$names" | xargs -r ps -o pid=,stat=,comm= -p | awk '$2 !~ /^Z/'; }
    for _ in $(seq 50); do
        [[ -z "$(live)" ]] && break
        sleep 0.1
    done
    if [[ -n "$(live)" ]]; then
        echo "test processes left running: $(live | tr '\n' ' ')"
        fail=1
    fi
    ((fail == 0)) && echo "no segment and no process left behind"
    exit $fail
    ;;
esac
