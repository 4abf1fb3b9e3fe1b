# shellcheck shell=bash
# results.sh - sourced by scripts/bench.sh: the result files under --out and their life cycle.
#
#   runs.tsv      SECTION NAME ROUND WALL_S PEAK_KIB USER_S SYS_S LOAD1   (one row per measured run)
#   sizes.tsv     NAME ROUND BYTES            failures.tsv  SECTION NAME ROUND LAST-ERROR-LINE
#   scale.tsv     KIND TAG DIR BYTES FILES    json/SLUG-ROUND.json  kiln layer --json of each run
#   meta.tsv      KEY VALUE...: machine, versions, loads, and `measured SECTION WHEN (COMMIT)`
#   lscpu.txt, profile.txt (--profile)
# plot_bench.py reads them all and writes results.json, results.csv, the plots and BENCHMARKS.md.

# results_start: makes OUT absolute, empties the result files (or with --keep --only, drops only
# the --only sections' rows), and writes meta.tsv. Sets OUT, RES, LOAD_START.
results_start() {
  mkdir -p "$OUT"; OUT=$(readlink -f "$OUT")
  local kept=
  if [ -n "$KEEP" ] && [ -n "$ONLY" ] && [ -s "$OUT/runs.tsv" ]; then
    # --keep: re-measure the --only sections, keep the other sections' results of the last run.
    # Where each kept section was measured: its `measured` line of the last run's meta, else
    # (older results) that run's start time and commit.
    kept=$(python3 - "$OUT/meta.tsv" "$ONLY" <<'PY'
import sys
meta = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if "\t" in l]
only = set(sys.argv[2].split(","))
get = lambda k: next((r[1] for r in meta if r[0] == k), "?")
measured = {r[1]: r[2] for r in meta if r[0] == "measured" and len(r) > 2}
for sec in ["layer", "ceiling", "build", "push", "run", "minimal", "multiarch", "scale", "cache", "family", "transfer", "front", "concurrency"]:
    if sec not in only:
        print(f"measured\t{sec}\t{measured.get(sec, get('started') + ' (' + get('git') + ')')}")
# The sizes the kept ceiling results were measured on.
if "ceiling" not in only:
    for r in meta:
        if r[0] in ("tar_bytes", "sample_bytes"):
            print("\t".join(r))
PY
)
    log "keeping the results of sections other than $ONLY"
    python3 - "$OUT" "$ONLY" <<'PY'
import os, re, sys
out, only = sys.argv[1], set(sys.argv[2].split(","))
rows = [l.rstrip("\n").split("\t") for l in open(f"{out}/runs.tsv") if l.strip()]
gone = {r[1] for r in rows if r[0] in only}
open(f"{out}/runs.tsv", "w").writelines("\t".join(r) + "\n" for r in rows if r[0] not in only)
for name in ("sizes.tsv", "failures.tsv"):
    p = f"{out}/{name}"
    if os.path.exists(p):
        keep = [l for l in open(p) if l.split("\t")[0] not in gone]
        open(p, "w").writelines(keep)
slugs = {re.sub(r"[^A-Za-z0-9.\n]", "_", n) for n in gone}  # lib.sh's slug()
for f in os.listdir(f"{out}/json"):
    if f.rsplit("-", 1)[0] in slugs:
        os.remove(f"{out}/json/{f}")
if "scale" in only:
    open(f"{out}/scale.tsv", "w").close()
PY
    [ "$PROFILE" = 1 ] && rm -f "$OUT/profile.txt"
  else
    rm -rf "$OUT/json" "$OUT/runs.tsv" "$OUT/sizes.tsv" "$OUT/scale.tsv" "$OUT/profile.txt" "$OUT/failures.tsv" \
      "$OUT/family.tsv" "$OUT/transfer.tsv" "$OUT/concurrency.tsv" "$OUT/front.tsv"
    : > "$OUT/runs.tsv"; : > "$OUT/sizes.tsv"; : > "$OUT/scale.tsv"
  fi
  mkdir -p "$OUT/json"
  RES=$OUT/runs.tsv
  LOAD_START=$(load)
  { echo "load_start	$LOAD_START"; echo "started	$(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "runs	$RUNS"
    [ -n "$kept" ] && echo "$kept"
    for sec in "${SECTIONS[@]}"; do
      want "$sec" && echo "measured	$sec	$(date -u +%Y-%m-%dT%H:%M:%SZ) ($(git rev-parse --short HEAD 2>/dev/null || echo ?))"
    done
    echo "quick	$QUICK"; echo "kernel	$(uname -r)"; echo "git	$(git rev-parse --short HEAD 2>/dev/null || echo ?)"
    echo "nproc	$(nproc)"; echo "mem	$(free -g | awk '/^Mem:/{print $2 " GiB"}')"
    for t in umoci buildah skopeo pigz zstd openssl docker-registry runc; do
      echo "version_$t	$(dpkg-query -W -f='${Version}' "$(dpkg -S "$(command -v "$t")" 2>/dev/null | head -1 | cut -d: -f1)" 2>/dev/null || echo ?)"
    done; } > "$OUT/meta.tsv"
  lscpu > "$OUT/lscpu.txt"
}

# results_finish: the closing lines of meta.tsv, then plot_bench.py (and the docs unless --no-docs).
results_finish() {
  local t1; t1=$(date +%s)
  { echo "load_end	$(load)"; echo "elapsed_s	$((t1 - T0))"; echo "only	${ONLY:-all}"; } >> "$OUT/meta.tsv"
  local docargs=(--docs "$DOCS"); [ "$NODOCS" = 1 ] && docargs=()
  python3 scripts/plot_bench.py "$OUT" "${docargs[@]}"
  log "done in $(( (t1 - T0) / 60 )) min $(( (t1 - T0) % 60 )) s (load at start $LOAD_START, at end $(load))"
}
