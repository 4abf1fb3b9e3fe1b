# shellcheck shell=bash
# lib.sh - sourced by scripts/bench.sh: the parts every section uses. Logging, the benchmark
# inputs (the corpus, the scratch directory), the one `measure` primitive that appends a row to
# runs.tsv, and `kiln_layer`, which the layer, ceiling and scale sections all measure.
# Reads the options bench.sh parsed (ONLY, QUICK, CORPUS, KILN, T0) and OUT/RES from results.sh.

want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }   # SECTION: was it asked for?
log() { printf '[bench %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# inputs: BIG (the ≥1 GiB corpus), CORPUS (what is measured: --corpus, BIG, or with --quick a
# 128 MiB subset of it), ONEFILE (a small file of the corpus that builds change, relative to it),
# WORK (scratch, removed on exit with the registry push.sh may start).
inputs() {
  BIG=$(scripts/make-corpus.sh)                         # the ≥1 GiB sysroot copy
  if [ -z "$CORPUS" ]; then
    if [ "$QUICK" = 1 ]; then CORPUS=$(scripts/make-corpus.sh --subset $((128 << 20)) "$BIG" /tmp/kiln-corpus-128m)
    else CORPUS=$BIG; fi
  fi
  echo "corpus	$CORPUS	$(du -sb "$CORPUS" | cut -f1)	$(find "$CORPUS" | wc -l)" >> "$OUT/meta.tsv"
  ONEFILE=toolchain/lib/rustlib/components
  [ -f "$CORPUS/$ONEFILE" ] || ONEFILE=$(cd "$CORPUS" && find . -type f -size -64k ! -name .complete | sort | head -1 | cut -c3-)
  WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX)
  REG_PID=
  trap cleanup EXIT
  chmod 755 "$WORK"
}
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { [ -z "$REG_PID" ] || kill "$REG_PID" 2>/dev/null || true
  [ -z "${CACHE_REG_PID:-}" ] || kill "$CACHE_REG_PID" 2>/dev/null || true
  local p; for p in ${PKG_PID:-} ${XFER_REG_PID:-}; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"; }

# measure SECTION NAME ROUND CMD... : one run under GNU time; appends a row to runs.tsv. A failed
# run is logged to failures.tsv and skipped (returns 1), so one flaky peer does not lose the rest.
measure() {
  local section=$1 name=$2 round=$3; shift 3
  local l; l=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time" "$@" > "$WORK/out" 2> "$WORK/err" || {
    echo "FAILED: $name (round $round): $*" >&2; tail -20 "$WORK/err" >&2
    printf '%s\t%s\t%s\t%s\n' "$section" "$name" "$round" "$(grep -v '^Command exited' "$WORK/err" | tail -1 | tr '\t' ' ')" >> "$OUT/failures.tsv"
    return 1; }
  read -r wall peak user sys < "$WORK/time"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$name" "$round" "$wall" "$peak" "$user" "$sys" "$l" >> "$RES"
}
size_of() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$OUT/sizes.tsv"; } # NAME ROUND BYTES
json_field() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
slug() { tr -c 'A-Za-z0-9.\n' '_' <<< "$1"; }   # as plot_bench.py's slug() and results.sh's --keep

kiln_layer() { # SECTION COMPRESSION ROUND [DIR] [NAME]  (its --json kept in json/, its size in sizes.tsv)
  local dir=${4:-$CORPUS} name=${5:-kiln layer $2}
  rm -rf "$WORK/kroot"
  measure "$1" "$name" "$3" "$KILN" --root "$WORK/kroot" --progress quiet layer "$dir" --compression "$2" --json || return 0
  cp "$WORK/out" "$OUT/json/$(slug "$name")-$3.json"
  size_of "$name" "$3" "$(json_field "$WORK/out" size)"
}
pipeline() { # SECTION NAME ROUND SHELL-COMMAND (output, if any, to $WORK/pipe.out)
  rm -f "$WORK/pipe.out"
  measure "$1" "$2" "$3" bash -c "$4" || return 0
  size_of "$2" "$3" "$(stat -c %s "$WORK/pipe.out" 2>/dev/null || echo 0)"
}
