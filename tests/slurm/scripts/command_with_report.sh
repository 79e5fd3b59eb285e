#!/bin/sh
export OMP_NUM_THREADS=4
export HPCSTATE_RUN_ID=20261123-200000-a1b2c3
export HPCSTATE_ITEM_ID=20261123-200000-a1b2c3.0
export HPCSTATE_REPORT_FILE='/scratch/u/out/hpcstate-report-20261123-200000-a1b2c3.{array_index}.json'
# hpcstate: run the payload under hpcstate's helper (perl), which writes the
# job's self-report and then ends as the payload did (the same exit code, or
# killed by the same signal). Without perl, the payload is exec'd.
if command -v perl >/dev/null 2>&1; then
  PERL5OPT= PERL5LIB= PERLLIB= exec perl -e @@PERL_HELPER@@ -- "${PERL5OPT+=$PERL5OPT}" "${PERL5LIB+=$PERL5LIB}" "${PERLLIB+=$PERLLIB}" python3 -c 'import sys; sys.exit(3)' 'it'"'"'s'
fi
echo 'hpcstate: no perl on this node: the job runs without hpcstate'"'"'s helper and writes no self-report' >&2
exec python3 -c 'import sys; sys.exit(3)' 'it'"'"'s'
