#!/bin/bash
# raybrain as a SLURM array job: each array task runs one shard of the experiment's run grid
# (`raybrain run CONFIG --shard I/N`) on its own node with a private one-node Ray, into the same
# shared results folder. No long-lived driver: tasks start, finish and fail independently, and
# their records merge into one dataframe (nothing lost, nothing recorded twice).
#
#   sbatch --array=1-8 cluster/slurm-array.sh experiments/compare-optimizers.yaml  # 8 shards
#   sbatch --array=3 cluster/slurm-array.sh results/compare-optimizers 8           # re-run shard 3 of 8
#   RAYBRAIN_STORAGE=/shared/me/raybrain sbatch --array=1-8 cluster/slurm-array.sh CONFIG
#
# The shard count N is the array's task count (SLURM_ARRAY_TASK_COUNT) unless given after the
# target; a task's shard is its SLURM_ARRAY_TASK_ID (so use --array=1-N). Given a results folder
# instead of a config, a task resumes its shard where it stopped (a killed or timed-out task).
# Submit from the repository root on a file system every node sees; the results folder
# ($RAYBRAIN_STORAGE, default results/ in the submit directory) must be shared as well.
# Prerequisites (once, CHANGE to your site): a Python 3.11 virtual environment on the shared file
# system with raybrain (and its gpu extra on GPU nodes), e.g. from a login node:
#   python3.11 -m venv .venv && .venv/bin/pip install -e '.[gpu]'
#
# Each task starts its own local Ray (no RAY_ADDRESS): it listens on the loopback address only,
# with token authentication on (Ray generates the token), and stops with the task.
#
# SLURM reads the #SBATCH lines below (comments stay on lines of their own). CHANGE: GPUs and cores
# per task, the wall time (per shard), and, where the site needs them, partition and account.
#SBATCH --job-name=raybrain-shard
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=raybrain-%A_%a.out
# #SBATCH --partition=gpu
# #SBATCH --account=YOUR-ACCOUNT

set -euo pipefail
: "${SLURM_ARRAY_TASK_ID:?submit this script with sbatch --array=1-N}"

target=${1:?usage: sbatch --array=1-N slurm-array.sh CONFIG|RESULTS_DIR [N]}
shards=${2:-${SLURM_ARRAY_TASK_COUNT:?give the shard count after the target}}
shard="$SLURM_ARRAY_TASK_ID/$shards"
submit_dir=${SLURM_SUBMIT_DIR:-$PWD}
storage=${RAYBRAIN_STORAGE:-$submit_dir/results}
venv=${RAYBRAIN_VENV:-$submit_dir/.venv}

cd "$submit_dir"
# shellcheck disable=SC1091  # the virtual environment exists only on the cluster
source "$venv/bin/activate"
unset RAY_ADDRESS   # a private Ray per task, never another job's cluster

cleanup=()
trap 'rm -f "${cleanup[@]}"' EXIT
trap 'exit 143' TERM    # scancel and the time limit send SIGTERM: raybrain saves, then we clean up

if [[ -d $target ]]; then
    if [[ ! -f $target/experiment.json ]]; then
        echo "slurm-array.sh: $target is not an experiment results directory (no experiment.json)" >&2
        exit 2
    fi
    command=(raybrain resume "$target" --shard "$shard")
elif [[ -f $target ]]; then
    # The config with `storage:` set to the shared results directory (one copy per task, all equal).
    run_config="$(dirname "$target")/.$(basename "$target" .yaml).slurm-${SLURM_ARRAY_JOB_ID:-0}-$SLURM_ARRAY_TASK_ID.yaml"
    { grep -v '^storage:' "$target"; echo "storage: $storage"; } > "$run_config"
    cleanup+=("$run_config")
    command=(raybrain run "$run_config" --shard "$shard")
else
    echo "slurm-array.sh: no experiment config or results directory at $target" >&2
    exit 2
fi

echo "raybrain: shard $shard of $target on $(hostname), results under $storage"
"${command[@]}" --num-cpus "${SLURM_CPUS_PER_TASK:-$(nproc)}"
