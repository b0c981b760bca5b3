#!/bin/bash
# raybrain on a SLURM cluster: one Ray cluster across the job's nodes, started with Ray's
# `ray symmetric-run` recipe (Ray >= 2.49), which starts Ray on every node, runs
# `raybrain run CONFIG` on the first one, and stops Ray on every node when the run ends.
#
#   sbatch cluster/slurm.sh                                      # experiments/compare-optimizers.yaml
#   sbatch cluster/slurm.sh experiments/pfic-cmaes.yaml          # another experiment config
#   sbatch cluster/slurm.sh results/compare-optimizers           # resume a stopped experiment
#   RAYBRAIN_STORAGE=/shared/me/raybrain sbatch cluster/slurm.sh # results elsewhere (shared!)
#
# Submit from the repository root, which must be on a file system that every node sees.
# Prerequisites (once, CHANGE to your site): a Python 3.11 virtual environment on the shared file
# system with raybrain and its gpu extra, e.g. from a login node:
#   python3.11 -m venv .venv && .venv/bin/pip install -e '.[gpu]'
# (or point RAYBRAIN_VENV at one). Ray comes with raybrain; every node runs the same one.
#
# Unlike the cloud recipes every node here is a GPU node, so the first node runs trials as well
# as the driver. Results go to $RAYBRAIN_STORAGE (default: results/ in the submit directory),
# which every node must see at the same path: raybrain writes its results there from all nodes.
#
# Token authentication stays on: the job makes a fresh token, readable only by you, on the shared
# file system, and every Ray process on every node (srun passes the environment on) uses it.
#
# SLURM reads the #SBATCH lines below (comments stay on lines of their own). CHANGE: the number
# of GPU nodes, GPUs and cores per node, the wall time (for the whole experiment; a run cut short
# goes on with `sbatch cluster/slurm.sh results/NAME`),
# and, where the site needs them, partition and account (remove the space after the first #).
# --exclusive: symmetric-run ends with `ray stop`, so the nodes must be ours alone.
# --ntasks-per-node=1: one Ray node per machine; Ray shares out its cores and GPUs.
#SBATCH --job-name=raybrain
#SBATCH --nodes=2
#SBATCH --exclusive
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
#SBATCH --output=raybrain-%j.out
# #SBATCH --partition=gpu
# #SBATCH --account=YOUR-ACCOUNT

set -euo pipefail
: "${SLURM_JOB_ID:?submit this script with sbatch}"

target=${1:-experiments/compare-optimizers.yaml}
submit_dir=${SLURM_SUBMIT_DIR:-$PWD}
storage=${RAYBRAIN_STORAGE:-$submit_dir/results}
venv=${RAYBRAIN_VENV:-$submit_dir/.venv}
port=6379

cd "$submit_dir"
# shellcheck disable=SC1091  # the virtual environment exists only on the cluster
source "$venv/bin/activate"

# Token authentication: a per-job token file on the shared file system, removed at the end.
export RAY_AUTH_MODE=token
token_dir="$storage/.ray-tokens"
mkdir -p "$token_dir"
chmod 700 "$token_dir"
export RAY_AUTH_TOKEN_PATH="$token_dir/$SLURM_JOB_ID"
(umask 077 && python -c 'import secrets; print(secrets.token_hex(32))' > "$RAY_AUTH_TOKEN_PATH")
cleanup=("$RAY_AUTH_TOKEN_PATH")
trap 'rm -f "${cleanup[@]}"' EXIT
trap 'exit 143' TERM    # scancel and the time limit send SIGTERM: clean up on the way out too

if [[ -d $target ]]; then
    # A results directory: continue that experiment where it stopped (its saved config keeps
    # its storage path).
    if [[ ! -f $target/experiment.json ]]; then
        echo "slurm.sh: $target is not an experiment results directory (no experiment.json)" >&2
        exit 2
    fi
    command=(raybrain resume "$target")
elif [[ -f $target ]]; then
    # The config with `storage:` set to the shared results directory, written next to the
    # original so that paths inside it still resolve the same way.
    run_config="$(dirname "$target")/.$(basename "$target" .yaml).slurm-$SLURM_JOB_ID.yaml"
    { grep -v '^storage:' "$target"; echo "storage: $storage"; } > "$run_config"
    cleanup+=("$run_config")
    command=(raybrain run "$run_config")
else
    echo "slurm.sh: no experiment config or results directory at $target" >&2
    exit 2
fi

# The head is the first node of the allocation; Ray needs its IPv4 address.
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address |
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+(\.[0-9]+)+$/) { print $i; exit } }')
if [[ -z $head_ip ]]; then
    echo "slurm.sh: no IPv4 address found for $head_node" >&2
    exit 1
fi
echo "raybrain: Ray head $head_ip:$port on $head_node, ${#nodes[@]} node(s), results under $storage"

# Give the other nodes time to join (imports from a shared file system can be slow).
export RAY_SYMMETRIC_RUN_CLUSTER_WAIT_TIMEOUT=${RAY_SYMMETRIC_RUN_CLUSTER_WAIT_TIMEOUT:-300}

# raybrain joins the running Ray cluster because RAY_ADDRESS is set (otherwise it starts its own).
srun --nodes="${#nodes[@]}" --ntasks-per-node=1 \
    ray symmetric-run --address "$head_ip:$port" --min-nodes "${#nodes[@]}" \
    --num-cpus "${SLURM_CPUS_PER_TASK:-$(nproc)}" \
    -- env RAY_ADDRESS="$head_ip:$port" "${command[@]}"
