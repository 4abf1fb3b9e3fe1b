#!/usr/bin/env bash
# bench-peers.sh - kiln against its peers on the same ≥1 GiB tree, in one run, runs alternated,
# median of RUNS (default 5): the peer sections of scripts/bench.sh (layer, build, push, run),
# without the ceilings, the Debian build, the scaling trees or the docs. See scripts/bench/SECTION.sh
# for what is measured and the targets; results go to out/bench-peers/.
#
#   scripts/bench-peers.sh [--runs N] [--corpus DIR] [--only layer|build|push|run]
set -euo pipefail
ARGS=(--no-docs --out out/bench-peers); ONLY=layer,build,push,run
while [ $# -gt 0 ]; do
  case $1 in
    --runs|--corpus) ARGS+=("$1" "$2"); shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--corpus DIR] [--only layer|build|push|run]" >&2; exit 2 ;;
  esac
done
exec "$(dirname "$0")/bench.sh" "${ARGS[@]}" --only "$ONLY"
