#!/bin/bash
#SBATCH --job-name=mine
#SBATCH --output=out-%j.log

# the payload
# hpcstate: re-run this script under hpcstate's helper (perl), which writes the
# job's self-report and then ends as the script did. Without perl, it runs as is.
if [ "${HPCSTATE_HELPER_PID-}" != "$PPID" ] && [ "${HPCSTATE_HELPER_JOB-}" != "job:${SLURM_JOB_ID-}" ]; then
  if command -v perl >/dev/null 2>&1; then
    HPCSTATE_HELPER_PID=$$ HPCSTATE_HELPER_JOB="job:${SLURM_JOB_ID-}" PERL5OPT= PERL5LIB= PERLLIB= exec perl -e @@PERL_HELPER@@ -- "${PERL5OPT+=$PERL5OPT}" "${PERL5LIB+=$PERL5LIB}" "${PERLLIB+=$PERLLIB}" "$0" "$@"
  fi
  echo 'hpcstate: no perl on this node: the job runs without hpcstate'"'"'s helper and writes no self-report' >&2
fi
srun hostname
exit 3
