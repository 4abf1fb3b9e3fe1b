#!/usr/bin/env bash
# bench-peers.sh - kiln against its peers on the same ≥1 GiB tree, in one run, runs alternated
# (A B A B …), median of RUNS (default 5). Prints wall-time ratios, output sizes and peak RSS.
#
#   scripts/bench-peers.sh [--runs N] [--corpus DIR]
#
# Layer assembly (foundation targets):
#   kiln layer (default gzip)     vs  umoci insert                      target ≤ 0.75×, size ≤ umoci's
#   kiln layer --compression gzip:6 vs tar | pigz -6 | sha256sum        target ≤ 0.45×, size within 1%
#   kiln layer --compression zstd:3 vs tar | zstd -3 -T2 | sha256sum    target ≤ 1.0×
#   peak RSS of kiln                                                    target ≤ 64 MiB
# The machine is shared and noisy: compare only the ratios of pairs taken in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5; CORPUS=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --corpus) CORPUS=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--corpus DIR]" >&2; exit 2 ;;
  esac
done
scripts/install-peers.sh
cargo build --release --locked -q
KILN=$PWD/target/release/kiln
CORPUS=${CORPUS:-$(scripts/make-corpus.sh)}
WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX); trap 'rm -rf "$WORK"' EXIT
RES=$WORK/results.tsv; : > "$RES"

# measure NAME CMD... : one run under GNU time; appends "NAME wall_s peak_kib" to $RES
measure() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" > "$WORK/out" 2> "$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  printf '%s\t%s\n' "$name" "$(cat "$WORK/time")" >> "$RES"
}
size_of() { printf '%s\t%s\n' "$1" "$2" >> "$WORK/sizes.tsv"; }

kiln_layer() { # compression
  rm -rf "$WORK/kroot"
  measure "kiln $1" "$KILN" --root "$WORK/kroot" --progress quiet layer "$CORPUS" --compression "$1" --json
  size_of "kiln $1" "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["size"])' "$WORK/out")"
}
umoci_insert() {
  rm -rf "$WORK/umoci"
  umoci init --layout "$WORK/umoci" >/dev/null && umoci new --image "$WORK/umoci:base" >/dev/null
  measure "umoci insert" umoci insert --image "$WORK/umoci:base" "$CORPUS" /corpus
  size_of "umoci insert" "$(find "$WORK/umoci/blobs" -type f -size +1M -printf '%s\n' | sort -n | tail -1)"
}
pipeline() { # name compressor-command
  measure "$1" bash -c "tar -C '$CORPUS' -cf - . | $2 | tee '$WORK/pipe.out' | sha256sum"
  size_of "$1" "$(stat -c %s "$WORK/pipe.out")"
}

echo "corpus: $CORPUS ($(du -sh "$CORPUS" | cut -f1)), runs: $RUNS, load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for i in $(seq 1 "$RUNS"); do
  echo "round $i/$RUNS" >&2
  kiln_layer gzip;   umoci_insert
  kiln_layer gzip:6; pipeline "tar|pigz -6|sha256sum" "pigz -6"
  kiln_layer zstd:3; pipeline "tar|zstd -3 -T2|sha256sum" "zstd -q -3 -T2"
done

python3 - "$RES" "$WORK/sizes.tsv" <<'PY'
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
t, rss = {}, {}
for name, v in rows:
    wall, peak = v.split()
    t.setdefault(name, []).append(float(wall)); rss.setdefault(name, []).append(int(peak))
size = {}
for l in open(sys.argv[2]):
    n, s = l.split("\t"); size[n] = int(s)
med = {k: st.median(v) for k, v in t.items()}
print(f"{'case':32} {'median s':>9} {'min-max':>13} {'peak MiB':>9} {'output MB':>10}")
for k in t:
    print(f"{k:32} {med[k]:9.2f} {min(t[k]):6.2f}-{max(t[k]):<6.2f} {max(rss[k])/1024:9.1f} {size.get(k,0)/1e6:10.1f}")
def pair(a, b, target, size_rule):
    # median of per-round ratios (the rounds are paired A/B)
    r = st.median([x / y for x, y in zip(t[a], t[b])])
    ok = r <= target
    sa, sb = size.get(a, 0), size.get(b, 0)
    s_ok = size_rule(sa, sb)
    print(f"{a} / {b}: {r:.2f}x (target <= {target}x: {'met' if ok else 'NOT met'}); size {sa/1e6:.1f} vs {sb/1e6:.1f} MB ({(sa/sb-1)*100:+.1f}%: {'met' if s_ok else 'NOT met'})")
print()
pair("kiln gzip", "umoci insert", 0.75, lambda a, b: a <= b)
pair("kiln gzip:6", "tar|pigz -6|sha256sum", 0.45, lambda a, b: abs(a / b - 1) <= 0.01)
pair("kiln zstd:3", "tar|zstd -3 -T2|sha256sum", 1.0, lambda a, b: True)
peak = max(max(v) for k, v in rss.items() if k.startswith("kiln")) / 1024
print(f"kiln peak RSS: {peak:.1f} MiB (target <= 64 MiB: {'met' if peak <= 64 else 'NOT met'})")
PY
