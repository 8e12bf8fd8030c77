#!/usr/bin/env bash
# Install the real clients the tests and benchmarks use, when they are missing.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 || need+=(git)
command -v curl >/dev/null 2>&1 || need+=(curl)  # job scripts in the runner tests and the README
git lfs version >/dev/null 2>&1 || need+=(git-lfs)
# The registry tests: a real Docker registry (CNCF distribution 2.8) and skopeo.
command -v docker-registry >/dev/null 2>&1 || [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
# The PostgreSQL half of the suite and the fleet tests: a throwaway cluster (initdb, pg_ctl)
# from Debian's server package; `runuser` (util-linux) runs it as `postgres` when we are root.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
