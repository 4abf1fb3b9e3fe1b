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
# Builds (FROM scratch + COPY of the same tree; buildah with vfs storage):
#   kiln build, cold (empty store)   vs  buildah bud, cold               target ≤ 0.35×
#   kiln build, warm (nothing changed) vs buildah bud, cache hit         target ≤ 0.02×
# Push (the corpus as a one-layer image, to a local docker-registry on 127.0.0.1):
#   kiln push, cold (new repository)  vs  skopeo copy, cold               target ≤ 1.0×
#   kiln push, warm (blobs present)   vs  skopeo copy, warm               target ≤ 1.0×
# The machine is shared and noisy: compare only the ratios of pairs taken in this run.
# --only layer|build|push runs one section.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5; CORPUS=; ONLY=
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --corpus) CORPUS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--corpus DIR] [--only layer|build|push]" >&2; exit 2 ;;
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

# The build context is the corpus; the Dockerfile lives outside it.
printf 'FROM scratch\nCOPY . /corpus/\n' > "$WORK/Dockerfile"
kiln_build() { # cold|warm
  [ "$1" = cold ] && rm -rf "$WORK/kbuild"
  measure "kiln build $1" "$KILN" --root "$WORK/kbuild" --progress quiet build "$CORPUS" -f "$WORK/Dockerfile" -t corpus
}
buildah_build() { # cold|warm
  local B="buildah --root $WORK/buildah/root --runroot $WORK/buildah/run --storage-driver vfs"
  [ "$1" = cold ] && { $B rmi -a -f >/dev/null 2>&1 || true; rm -rf "$WORK/buildah"; }
  measure "buildah bud $1" $B bud --layers --network none -f "$WORK/Dockerfile" -t localhost/corpus "$CORPUS"
}

# A local registry for the push section (plain HTTP on a free loopback port).
start_registry() {
  REG_PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  mkdir -p "$WORK/registry/data"
  cat > "$WORK/registry/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
YML
  docker-registry serve "$WORK/registry/config.yml" > "$WORK/registry/log" 2>&1 &
  REG_PID=$!
  trap 'kill $REG_PID 2>/dev/null; rm -rf "$WORK"' EXIT
  for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the registry did not start" >&2; exit 1
}
SKOPEO_CACHE=/var/lib/containers/cache/blob-info-cache-v1.boltdb
kiln_push() { # cold|warm N
  local repo="127.0.0.1:$REG_PORT/bench/$1-$2"
  [ "$1" = warm ] && repo="127.0.0.1:$REG_PORT/bench/warm"
  # cold: forget where blobs were seen, or kiln would mount instead of uploading
  [ "$1" = cold ] && rm -rf "$WORK/kpush/origins"
  measure "kiln push $1" "$KILN" --root "$WORK/kpush" --progress quiet push corpus "$repo:latest"
}
skopeo_push() { # cold|warm N
  local repo="127.0.0.1:$REG_PORT/bench/skopeo-$1-$2"
  [ "$1" = warm ] && repo="127.0.0.1:$REG_PORT/bench/skopeo-warm"
  # cold: skopeo's blob-info cache would make it mount instead of uploading (PEERS.md pitfall 10)
  [ "$1" = cold ] && rm -f "$SKOPEO_CACHE"
  measure "skopeo copy $1" skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/push-layout:latest" "docker://$repo:latest"
}
if [ -z "$ONLY" ] || [ "$ONLY" = push ]; then
  start_registry
  "$KILN" --root "$WORK/kpush" --progress quiet import "$CORPUS" -t corpus -o "oci:$WORK/push-layout:latest" >/dev/null
  "$KILN" --root "$WORK/kpush" --progress quiet push corpus "127.0.0.1:$REG_PORT/bench/warm:latest" >/dev/null
  skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/push-layout:latest" "docker://127.0.0.1:$REG_PORT/bench/skopeo-warm:latest"
fi

echo "corpus: $CORPUS ($(du -sh "$CORPUS" | cut -f1)), runs: $RUNS, load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for i in $(seq 1 "$RUNS"); do
  echo "round $i/$RUNS" >&2
  if [ -z "$ONLY" ] || [ "$ONLY" = layer ]; then
    kiln_layer gzip;   umoci_insert
    kiln_layer gzip:6; pipeline "tar|pigz -6|sha256sum" "pigz -6"
    kiln_layer zstd:3; pipeline "tar|zstd -3 -T2|sha256sum" "zstd -q -3 -T2"
  fi
  if [ -z "$ONLY" ] || [ "$ONLY" = build ]; then
    kiln_build cold; buildah_build cold
    kiln_build warm; buildah_build warm
  fi
  if [ -z "$ONLY" ] || [ "$ONLY" = push ]; then
    kiln_push cold "$i"; skopeo_push cold "$i"
    kiln_push warm "$i"; skopeo_push warm "$i"
  fi
done
touch "$WORK/sizes.tsv"

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
    sizes = f"; size {sa/1e6:.1f} vs {sb/1e6:.1f} MB ({(sa/sb-1)*100:+.1f}%: {'met' if s_ok else 'NOT met'})" if sa and sb else ""
    print(f"{a} / {b}: {r:.3f}x (target <= {target}x: {'met' if ok else 'NOT met'}){sizes}")
print()
if "kiln gzip" in t:
    pair("kiln gzip", "umoci insert", 0.75, lambda a, b: a <= b)
    pair("kiln gzip:6", "tar|pigz -6|sha256sum", 0.45, lambda a, b: abs(a / b - 1) <= 0.01)
    pair("kiln zstd:3", "tar|zstd -3 -T2|sha256sum", 1.0, lambda a, b: True)
if "kiln push cold" in t:
    pair("kiln push cold", "skopeo copy cold", 1.0, lambda a, b: True)
    pair("kiln push warm", "skopeo copy warm", 1.0, lambda a, b: True)
if "kiln build cold" in t:
    pair("kiln build cold", "buildah bud cold", 0.35, lambda a, b: True)
    pair("kiln build warm", "buildah bud warm", 0.02, lambda a, b: True)
peak = max(max(v) for k, v in rss.items() if k.startswith("kiln")) / 1024
print(f"kiln peak RSS: {peak:.1f} MiB (target <= 64 MiB: {'met' if peak <= 64 else 'NOT met'})")
PY
