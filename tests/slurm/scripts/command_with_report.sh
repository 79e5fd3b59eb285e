#!/bin/sh
export OMP_NUM_THREADS=4
export HPCSTATE_RUN_ID=20261123-200000-a1b2c3
export HPCSTATE_ITEM_ID=20261123-200000-a1b2c3.0
export HPCSTATE_REPORT_FILE='/scratch/u/out/hpcstate-report-20261123-200000-a1b2c3.{array_index}.json'
# hpcstate: run the payload as a child; when it ends, write its self-report
# (JSON, atomically) and leave the way it did.
hpcstate_caught=
for hpcstate_sig in HUP INT QUIT TERM USR1 USR2 ALRM XCPU; do
  trap "hpcstate_caught=$hpcstate_sig" "$hpcstate_sig"
done
# The shell's own notes ("Segmentation fault", "Terminated") are not the job's
# output: this shell's stderr is /dev/null while the payload runs.
exec 9>&2 2>/dev/null
(exec python3 -c 'import sys; sys.exit(3)' 'it'"'"'s' 2>&9 9>&-)
hpcstate_status=$?
exec 2>&9 9>&-
hpcstate_signal=
if [ "$hpcstate_status" -gt 128 ] && [ -n "$hpcstate_caught" ] &&
  [ "$(kill -l "$hpcstate_status" 2>/dev/null)" = "$hpcstate_caught" ]; then
  # the job got signal N and the payload ended with 128+N: killed by it
  hpcstate_signal=$((hpcstate_status - 128))
fi
if [ -n "$hpcstate_signal" ]; then
  hpcstate_exit="\"code\": null, \"signal\": $hpcstate_signal"
  hpcstate_ambiguous=null
elif [ "$hpcstate_status" -gt 128 ] && [ "$hpcstate_status" -le 192 ]; then
  hpcstate_exit="\"code\": $hpcstate_status, \"signal\": null"
  hpcstate_ambiguous="\"the exit code $hpcstate_status may be a plain exit $hpcstate_status or a process killed by signal $((hpcstate_status - 128)); the job's shell cannot tell which\""
else
  hpcstate_exit="\"code\": $hpcstate_status, \"signal\": null"
  hpcstate_ambiguous=null
fi
hpcstate_index=
for hpcstate_value in "${HPCSTATE_ARRAY_INDEX-}" "${SLURM_ARRAY_TASK_ID-}" "${JOB_COMPLETION_INDEX-}"; do
  case $hpcstate_value in
    ''|*[!0-9]*) ;;
    *) hpcstate_index=$hpcstate_value; break ;;
  esac
done
hpcstate_file=/scratch/u/out/hpcstate-report-20261123-200000-a1b2c3."$hpcstate_index".json
case $hpcstate_file in
  */*) hpcstate_dir=${hpcstate_file%/*} ;;
  *) hpcstate_dir=. ;;
esac
hpcstate_tmp="$hpcstate_dir/.${hpcstate_file##*/}.$$.tmp"
hpcstate_now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if [ -e "$hpcstate_file" ] && [ ! -f "$hpcstate_file" ]; then
  echo "hpcstate: $hpcstate_file is not a regular file; no self-report written" >&2
elif [ -z "$hpcstate_now" ]; then
  echo "hpcstate: date failed; no self-report written" >&2
elif mkdir -p -- "$hpcstate_dir" &&
  printf '%s\n' '{"schema": 1, "run_id": "20261123-200000-a1b2c3", "item_id": "20261123-200000-a1b2c3.0", '"\"array_index\": ${hpcstate_index:-null}, \"exit\": {$hpcstate_exit, \"core_dumped\": false, \"ambiguous\": $hpcstate_ambiguous}, \"reported_at\": \"$hpcstate_now\""', "detail": "written by the batch script hpcstate generated, after the payload ended"}' >"$hpcstate_tmp" &&
  mv -f -- "$hpcstate_tmp" "$hpcstate_file"; then
  :
else
  rm -f -- "$hpcstate_tmp"
  echo "hpcstate: could not write the self-report $hpcstate_file" >&2
fi
if [ -n "$hpcstate_signal" ]; then
  hpcstate_name=$(kill -l "$hpcstate_signal" 2>/dev/null)
  if [ -n "$hpcstate_name" ]; then
    # die of the same signal (no core file of this shell), so Slurm records it
    ulimit -c 0 2>/dev/null
    trap - "$hpcstate_name"
    kill -s "$hpcstate_name" $$
  fi
fi
exit "$hpcstate_status"
