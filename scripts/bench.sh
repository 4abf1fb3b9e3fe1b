#!/usr/bin/env bash
# bench.sh - kiln's one benchmark harness: kiln against buildah, umoci, skopeo and the hardware
# limits of this machine, in one run, kiln and its peer alternated (A B A B …), median of RUNS.
# On a fresh machine it installs the peers, makes its inputs, measures, writes the results
# (runs.tsv, results.json, results.csv under --out) and SVG plots, and rewrites docs/BENCHMARKS.md.
#
#   scripts/bench.sh                 full run: 5 rounds, 1 GiB corpus, scaling to 4 GiB / 100k files,
#                                    writes docs/BENCHMARKS.md and docs/bench/ (~40 min on 2 cores)
#   scripts/bench.sh --quick         1 round, a 128 MiB corpus, small scaling trees; writes its
#                                    report under the --out dir only (a few minutes)
#   options: --runs N  --out DIR (default out/bench)  --only SECTION[,SECTION...]  --profile
#            --docs DIR (write BENCHMARKS.md and bench/*.svg there)  --no-docs  --corpus DIR
#            --kiln PATH (measure this binary instead of building target/release/kiln)
#            --keep (with --only: re-measure those sections, keep the others' results in --out)
#   sections: layer ceiling build push run minimal multiarch scale cache attest family transfer
#             front concurrency (default: all)
#
# Each section is a file of scripts/bench/ (targets from issues #2, #4, #5, #6, #8 in its header):
#   layer.sh    kiln layer gzip / gzip:6 / zstd:3 vs umoci insert, tar | pigz, tar | zstd
#   ceiling.sh  kiln layer none vs openssl dgst -sha256, tar | cat, single-core gzip and zstd
#   build.sh    FROM scratch + COPY of the corpus: kiln build vs buildah bud, cold, warm, one file
#   push.sh     kiln push vs skopeo copy to a local docker-registry, cold and warm
#   run.sh      rootless 20 × RUN true, and one RUN in the ≥1 GiB image: kiln vs buildah bud
#   minimal.sh  variants/Dockerfile.minimal on a debootstrap Debian base: kiln vs buildah bud
#   multiarch.sh  Dockerfile.minimal for linux/amd64,linux/arm64 (arm64 under QEMU): kiln vs buildah bud --manifest
#   scale.sh    kiln alone: kiln layer time and peak RSS against tree size and file count
#   cache.sh    a fresh runner with the registry cache: kiln build vs buildah bud --cache-from
#   attest.sh   the python variant with and without --sbom --provenance: cold, and a one-layer rebuild
#   family.sh   the four variants/Dockerfile* cold, rootless, through a local apt + PyPI cache
#   transfer.sh kiln pull / copy / a RUN's base unpack vs skopeo and umoci; fan-in bytes of a pull
#   front.sh    every kiln gzip/zstd level vs pigz -1…-9, gzip -6, zstd -1…-19, umoci, buildah
#   concurrency.sh  four variant builds at once vs in a row, kiln alone, store fsck after
# Each defines SECTION_setup (if it needs one) and SECTION_round ROUND; user.sh is what run,
# minimal and multiarch share (the unprivileged user). lib.sh has `measure` (one timed run → runs.tsv) and the
# inputs; results.sh the result files under --out (their format is in its header) and the
# closing plot_bench.py. This file parses the options and runs: set-ups, then RUNS rounds of
# every section asked for, kiln and its peer alternated (A B A B …) within a round.
# The machine is shared and noisy: only ratios of pairs taken in the same run mean anything; the
# load average is recorded beside every run.
set -euo pipefail
# The whole script is one block, parsed before it runs, and every part is sourced (read whole)
# before the first measurement: editing these files during a run is safe.
{
cd "$(dirname "$0")/.."
T0=$(date +%s)
RUNS=; QUICK=0; OUT=out/bench; ONLY=; PROFILE=0; DOCS=; NODOCS=0; CORPUS=; KILN=; KEEP=
usage() { sed -n '2,15p' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1; shift ;;
    --runs) RUNS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --profile) PROFILE=1; shift ;;
    --docs) DOCS=$2; shift 2 ;;
    --no-docs) NODOCS=1; shift ;;
    --keep) KEEP=1; shift ;;
    --corpus) CORPUS=$2; shift 2 ;;
    --kiln) KILN=$(readlink -f "$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$RUNS" ] || { [ "$QUICK" = 1 ] && RUNS=1 || RUNS=5; }
SCALE_RUNS=$(( RUNS < 3 ? RUNS : 3 ))   # kiln alone, unpaired: the median of 3 is enough
[ -n "$DOCS" ] || { [ "$QUICK" = 1 ] && DOCS=$OUT/docs || DOCS=docs; }
SECTIONS=(layer ceiling build push run minimal multiarch scale cache attest family transfer front concurrency)   # in the order they run
# shellcheck source=scripts/bench/lib.sh
. scripts/bench/lib.sh
# shellcheck source=scripts/bench/results.sh
. scripts/bench/results.sh

log "installing peers"
scripts/install-peers.sh
command -v perf >/dev/null || [ "$PROFILE" = 0 ] || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null 2>&1 || true; }
if [ -z "$KILN" ]; then
  log "building kiln (release)"
  cargo build --release --locked -q
  KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
fi
[ -x "$KILN" ] || { echo "no kiln binary at $KILN" >&2; exit 2; }

results_start
log "preparing inputs"
inputs
# The sections: sourced once $WORK exists (they name their stores under it).
# shellcheck source=scripts/bench/layer.sh
. scripts/bench/layer.sh
# shellcheck source=scripts/bench/ceiling.sh
. scripts/bench/ceiling.sh
# shellcheck source=scripts/bench/build.sh
. scripts/bench/build.sh
# shellcheck source=scripts/bench/push.sh
. scripts/bench/push.sh
# shellcheck source=scripts/bench/user.sh
. scripts/bench/user.sh
# shellcheck source=scripts/bench/run.sh
. scripts/bench/run.sh
# shellcheck source=scripts/bench/minimal.sh
. scripts/bench/minimal.sh
# shellcheck source=scripts/bench/multiarch.sh
. scripts/bench/multiarch.sh
# shellcheck source=scripts/bench/scale.sh
. scripts/bench/scale.sh
# shellcheck source=scripts/bench/cache.sh
. scripts/bench/cache.sh
# shellcheck source=scripts/bench/attest.sh
. scripts/bench/attest.sh
# shellcheck source=scripts/bench/family.sh
. scripts/bench/family.sh
# shellcheck source=scripts/bench/transfer.sh
. scripts/bench/transfer.sh
# shellcheck source=scripts/bench/front.sh
. scripts/bench/front.sh
# shellcheck source=scripts/bench/concurrency.sh
. scripts/bench/concurrency.sh

for sec in "${SECTIONS[@]}"; do
  if want "$sec" && declare -F "${sec}_setup" >/dev/null; then "${sec}_setup"; fi
done
echo "load_after_setup	$(load)" >> "$OUT/meta.tsv"

log "corpus: $CORPUS ($(du -sh "$CORPUS" | cut -f1)), runs: $RUNS, load: $(load)"
for i in $(seq 1 "$RUNS"); do
  for sec in "${SECTIONS[@]}"; do
    want "$sec" || continue
    [ "$sec" != scale ] || [ "$i" -le "$SCALE_RUNS" ] || continue
    log "round $i/$RUNS: $sec"
    "${sec}_round" "$i"
  done
done
[ "$PROFILE" = 0 ] || layer_profile

results_finish
exit 0
}
