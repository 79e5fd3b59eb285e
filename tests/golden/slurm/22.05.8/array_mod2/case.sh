#!/bin/bash
exit $((SLURM_ARRAY_TASK_ID % 2))
