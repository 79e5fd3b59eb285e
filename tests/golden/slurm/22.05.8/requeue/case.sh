#!/bin/bash
echo "run with SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}"
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then sleep 2; exit 0; fi
sleep 300
