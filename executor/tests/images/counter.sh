#!/bin/sh
# counter: the default command of the test image loadshift/counter:test.
#
# Prints 0, 1, 2, ... one number a line, every 100 ms, forever (starting from
# $1 if given). A container restored from a checkpoint continues the count
# where the checkpoint froze it; a fresh start would begin at 0 again, so the
# container's log tells a restore from a restart.
i=${1:-0}
while :; do
  echo "$i"
  i=$((i + 1))
  sleep 0.1
done
