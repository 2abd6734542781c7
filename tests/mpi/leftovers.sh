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
    if pgrep -x 'conform|locktest|sharedtest|sluice-demo|sluice-bench|sluice-soak' >/dev/null; then
        echo "test processes left running: $(pgrep -a -x 'conform|locktest|sharedtest|sluice-demo|sluice-bench|sluice-soak')"
        fail=1
    fi
    ((fail == 0)) && echo "no segment and no process left behind"
    exit $fail
    ;;
esac
