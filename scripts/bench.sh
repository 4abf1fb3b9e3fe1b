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
#   sections: layer ceiling build push run minimal scale (default: all)
#
# What each section pairs (targets from issues #2, #4, #5, #6, #8):
#   layer    kiln layer (gzip)       vs umoci insert                     ≤ 0.75×, size ≤ umoci's
#            kiln layer gzip:6       vs tar | pigz -6 | sha256sum         ≤ 0.45×, size within 1%
#            kiln layer zstd:3       vs tar | zstd -3 -T2 | sha256sum     ≤ 1.0×
#   ceiling  kiln layer none (its SHA-256 stage) vs openssl dgst -sha256 (SHA-NI) on the same tar bytes,
#            within 5%; kiln none vs tar | cat (walk + tar ceiling); single-core gzip -6 and
#            zstd -3 -T1 on a 256 MiB sample of the same tar (compression ceiling per core)
#   build    FROM scratch + COPY of the corpus: kiln build vs buildah bud (vfs), cold ≤ 0.35×,
#            warm ≤ 0.02×, and after one file of the context changed (no target; reported)
#   push     kiln push vs skopeo copy to a local docker-registry, cold and warm, ≤ 1.0×
#   run      rootless (unprivileged user, subordinate ids, runc, vfs): 20 × RUN true ≤ 0.25×;
#            one RUN changing one file in the ≥1 GiB image ≤ 0.25×
#   minimal  variants/Dockerfile.minimal on a debootstrap Debian base (imported with kiln import),
#            rootless, --no-cache, kiln vs buildah bud (apt-get needs the Debian mirror; no target)
#   scale    (kiln alone, min(RUNS, 3) rounds) kiln layer (default gzip) time and peak RSS for trees of 10 MiB, 100 MiB, 1 GiB, 4 GiB
#            and for 1k, 10k, 100k small files; peak RSS ≤ 64 MiB for 1 GiB; exponent of the
#            log-log fit ≈ 1 (linear)
# The machine is shared and noisy: only ratios of pairs taken in the same run mean anything; the
# load average is recorded beside every run.
set -euo pipefail
# The whole script is one block, parsed before it runs: editing this file during a run is safe.
{
cd "$(dirname "$0")/.."
T0=$(date +%s)
RUNS=; QUICK=0; OUT=out/bench; ONLY=; PROFILE=0; DOCS=; NODOCS=0; CORPUS=; KILN=; KEEP=
usage() { sed -n '2,17p' "$0" >&2; exit 2; }
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
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
log() { printf '[bench %s +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

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

mkdir -p "$OUT"; OUT=$(readlink -f "$OUT")
KEPT=
if [ -n "$KEEP" ] && [ -n "$ONLY" ] && [ -s "$OUT/runs.tsv" ]; then
  # --keep: re-measure the --only sections, keep the other sections' results of the last run.
  # Where each kept section was measured: its `measured` line of the last run's meta, else
  # (older results) that run's start time and commit.
  KEPT=$(python3 - "$OUT/meta.tsv" "$ONLY" <<'PY'
import sys
meta = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if "\t" in l]
only = set(sys.argv[2].split(","))
get = lambda k: next((r[1] for r in meta if r[0] == k), "?")
measured = {r[1]: r[2] for r in meta if r[0] == "measured" and len(r) > 2}
for sec in ["layer", "ceiling", "build", "push", "run", "minimal", "scale"]:
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
slugs = {re.sub(r"[^A-Za-z0-9.\n]", "_", n) for n in gone}  # bench.sh's slug()
for f in os.listdir(f"{out}/json"):
    if f.rsplit("-", 1)[0] in slugs:
        os.remove(f"{out}/json/{f}")
if "scale" in only:
    open(f"{out}/scale.tsv", "w").close()
PY
  [ "$PROFILE" = 1 ] && rm -f "$OUT/profile.txt"
else
  rm -rf "$OUT/json" "$OUT/runs.tsv" "$OUT/sizes.tsv" "$OUT/scale.tsv" "$OUT/profile.txt" "$OUT/failures.tsv"
  : > "$OUT/runs.tsv"; : > "$OUT/sizes.tsv"; : > "$OUT/scale.tsv"
fi
mkdir -p "$OUT/json"
RES=$OUT/runs.tsv
LOAD_START=$(load)
{ echo "load_start	$LOAD_START"; echo "started	$(date -u +%Y-%m-%dT%H:%M:%SZ)"; echo "runs	$RUNS"
  [ -n "$KEPT" ] && echo "$KEPT"
  for sec in layer ceiling build push run minimal scale; do
    want "$sec" && echo "measured	$sec	$(date -u +%Y-%m-%dT%H:%M:%SZ) ($(git rev-parse --short HEAD 2>/dev/null || echo ?))"
  done
  echo "quick	$QUICK"; echo "kernel	$(uname -r)"; echo "git	$(git rev-parse --short HEAD 2>/dev/null || echo ?)"
  echo "nproc	$(nproc)"; echo "mem	$(free -g | awk '/^Mem:/{print $2 " GiB"}')"
  for t in umoci buildah skopeo pigz zstd openssl docker-registry runc; do
    echo "version_$t	$(dpkg-query -W -f='${Version}' "$(dpkg -S "$(command -v "$t")" 2>/dev/null | head -1 | cut -d: -f1)" 2>/dev/null || echo ?)"
  done; } > "$OUT/meta.tsv"
lscpu > "$OUT/lscpu.txt"

# ---------- inputs ----------
log "preparing inputs"
BIG=$(scripts/make-corpus.sh)                         # the ≥1 GiB sysroot copy
if [ -z "$CORPUS" ]; then
  if [ "$QUICK" = 1 ]; then CORPUS=$(scripts/make-corpus.sh --subset $((128 << 20)) "$BIG" /tmp/kiln-corpus-128m)
  else CORPUS=$BIG; fi
fi
echo "corpus	$CORPUS	$(du -sb "$CORPUS" | cut -f1)	$(find "$CORPUS" | wc -l)" >> "$OUT/meta.tsv"
# One small regular file of the corpus that builds change (as a path relative to the corpus).
ONEFILE=toolchain/lib/rustlib/components
[ -f "$CORPUS/$ONEFILE" ] || ONEFILE=$(cd "$CORPUS" && find . -type f -size -64k ! -name .complete | sort | head -1 | cut -c3-)
WORK=$(mktemp -d /tmp/kiln-bench.XXXXXX)
REG_PID=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { [ -z "$REG_PID" ] || kill "$REG_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
chmod 755 "$WORK"

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
slug() { tr -c 'A-Za-z0-9.\n' '_' <<< "$1"; }

# ---------- layer ----------
kiln_layer() { # SECTION COMPRESSION ROUND [DIR] [NAME]
  local dir=${4:-$CORPUS} name=${5:-kiln layer $2}
  rm -rf "$WORK/kroot"
  measure "$1" "$name" "$3" "$KILN" --root "$WORK/kroot" --progress quiet layer "$dir" --compression "$2" --json || return 0
  cp "$WORK/out" "$OUT/json/$(slug "$name")-$3.json"
  size_of "$name" "$3" "$(json_field "$WORK/out" size)"
}
umoci_insert() { # ROUND
  rm -rf "$WORK/umoci"
  umoci init --layout "$WORK/umoci" >/dev/null && umoci new --image "$WORK/umoci:base" >/dev/null
  measure layer "umoci insert" "$1" umoci insert --image "$WORK/umoci:base" "$CORPUS" /corpus || return 0
  size_of "umoci insert" "$1" "$(find "$WORK/umoci/blobs" -type f -size +100k -printf '%s\n' | sort -n | tail -1)"
}
pipeline() { # SECTION NAME ROUND SHELL-COMMAND (output, if any, to $WORK/pipe.out)
  rm -f "$WORK/pipe.out"
  measure "$1" "$2" "$3" bash -c "$4" || return 0
  size_of "$2" "$3" "$(stat -c %s "$WORK/pipe.out" 2>/dev/null || echo 0)"
}
tarpipe() { # ROUND NAME COMPRESSOR
  pipeline layer "$2" "$1" "tar -C '$CORPUS' -cf - . | $3 | tee '$WORK/pipe.out' | sha256sum"
}

# ---------- ceiling ----------
ceiling_setup() {
  # The exact bytes kiln hashes: its own uncompressed layer blob (the tar stream).
  rm -rf "$WORK/kroot"
  "$KILN" --root "$WORK/kroot" --progress quiet layer "$CORPUS" --compression none --json > "$WORK/none.json"
  local hex; hex=$(json_field "$WORK/none.json" digest | cut -d: -f2)
  mv "$WORK/kroot/blobs/sha256/$hex" "$WORK/layer.tar"
  # A 256 MiB sample of it for the single-core compressors: 1 MiB out of every 4 (or all of it
  # when smaller), so it has the tar's mix of content.
  python3 - "$WORK/layer.tar" "$WORK/sample.tar" <<'PY'
import os, sys
src, dst = sys.argv[1], sys.argv[2]
n = os.path.getsize(src); step = 4 << 20 if n > (512 << 20) else 1 << 20
with open(src, "rb") as f, open(dst, "wb") as o:
    for off in range(0, n, step):
        f.seek(off); o.write(f.read(1 << 20))
PY
  echo "tar_bytes	$(stat -c %s "$WORK/layer.tar")" >> "$OUT/meta.tsv"
  echo "sample_bytes	$(stat -c %s "$WORK/sample.tar")" >> "$OUT/meta.tsv"
}

# ---------- build ----------
printf 'FROM scratch\nCOPY . /corpus/\n' > "$WORK/Dockerfile"
build_setup() { # the context: the corpus hard-linked, so one file can change without touching it
  cp -al "$CORPUS" "$WORK/ctx"
}
change_onefile() { # replace (not write through the link) one file of the context
  rm -f "$WORK/ctx/$ONEFILE"; echo "changed $1 $(date +%s%N)" > "$WORK/ctx/$ONEFILE"
}
kiln_build() { # cold|warm|onefile ROUND
  [ "$1" = cold ] && rm -rf "$WORK/kbuild"
  measure build "kiln build $1" "$2" "$KILN" --root "$WORK/kbuild" --progress quiet build "$WORK/ctx" -f "$WORK/Dockerfile" -t corpus || return 0
}
BUILDAH_ROOT=(buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/run" --storage-driver vfs)
buildah_build() { # cold|warm|onefile ROUND
  [ "$1" = cold ] && { "${BUILDAH_ROOT[@]}" rmi -a -f >/dev/null 2>&1 || true; rm -rf "$WORK/buildah"; }
  measure build "buildah bud $1" "$2" "${BUILDAH_ROOT[@]}" bud --layers --network none -f "$WORK/Dockerfile" -t localhost/corpus "$WORK/ctx" || return 0
}

# ---------- push ----------
start_registry() { # a plain-HTTP docker-registry on a free loopback port
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
  for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the registry did not start" >&2; exit 1
}
push_setup() {
  start_registry
  "$KILN" --root "$WORK/kpush" --progress quiet import "$CORPUS" -t corpus -o "oci:$WORK/push-layout:latest" >/dev/null
  "$KILN" --root "$WORK/kpush" --progress quiet push corpus "127.0.0.1:$REG_PORT/bench/warm:latest" >/dev/null
  skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/push-layout:latest" "docker://127.0.0.1:$REG_PORT/bench/skopeo-warm:latest"
}
SKOPEO_CACHE=/var/lib/containers/cache/blob-info-cache-v1.boltdb
kiln_push() { # cold|warm ROUND
  local repo="127.0.0.1:$REG_PORT/bench/$1-$2"
  [ "$1" = warm ] && repo="127.0.0.1:$REG_PORT/bench/warm"
  # cold: forget where blobs were seen, or kiln would mount instead of uploading
  [ "$1" = cold ] && rm -rf "$WORK/kpush/origins"
  measure push "kiln push $1" "$2" "$KILN" --root "$WORK/kpush" --progress quiet push corpus "$repo:latest" || return 0
}
skopeo_push() { # cold|warm ROUND
  local repo="127.0.0.1:$REG_PORT/bench/skopeo-$1-$2"
  [ "$1" = warm ] && repo="127.0.0.1:$REG_PORT/bench/skopeo-warm"
  # cold: skopeo's blob-info cache would make it mount instead of uploading (PEERS.md pitfall 10)
  [ "$1" = cold ] && rm -f "$SKOPEO_CACHE"
  measure push "skopeo copy $1" "$2" skopeo copy --quiet --dest-tls-verify=false "oci:$WORK/push-layout:latest" "docker://$repo:latest" || return 0
}

# ---------- run / minimal: as an unprivileged user (the tests' user when run as root) ----------
RUNUSER=kiln-test-user
AS_USER=()
[ "$(id -u)" -eq 0 ] && AS_USER=(runuser -u "$RUNUSER" -- env -i
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOME="$WORK/u/home" XDG_RUNTIME_DIR="$WORK/u/xdg" TMPDIR="$WORK/u/tmp")
as_user() { "${AS_USER[@]}" "$@"; }
UB=(buildah --root "$WORK/u/broot" --runroot "$WORK/u/brun" --storage-driver vfs)
UK=("$WORK/u/kiln" --root "$WORK/u/kroot" --progress quiet)
user_setup() {
  [ -d "$WORK/u" ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    id "$RUNUSER" >/dev/null 2>&1 || useradd -m "$RUNUSER"
    grep -q "^$RUNUSER:" /etc/subuid || usermod --add-subuids 200000-265535 "$RUNUSER"
    grep -q "^$RUNUSER:" /etc/subgid || usermod --add-subgids 200000-265535 "$RUNUSER"
  fi
  mkdir -p "$WORK/u/home" "$WORK/u/xdg" "$WORK/u/tmp" "$WORK/u/bb/bin" "$WORK/u/ctx"
  cp "$KILN" "$WORK/u/kiln"
  [ "$(id -u)" -eq 0 ] && chown -R "$RUNUSER:" "$WORK/u"
  chmod 700 "$WORK/u/xdg"
}
run_setup() {
  user_setup
  cp "$(command -v busybox)" "$WORK/u/bb/bin/busybox"
  for a in sh true echo; do ln -sf busybox "$WORK/u/bb/bin/$a"; done
  mkdir -p "$WORK/u/bb/tmp" "$WORK/u/bb/etc" && chmod 1777 "$WORK/u/bb/tmp"
  { printf 'FROM localhost/busybox\n'; for _ in $(seq 1 20); do printf 'RUN true\n'; done; } > "$WORK/u/Dockerfile.true"
  printf 'FROM localhost/corpus\nRUN echo changed > /%s\n' "$ONEFILE" > "$WORK/u/Dockerfile.big"
  [ "$(id -u)" -eq 0 ] && chown -R "$RUNUSER:" "$WORK/u"
  as_user "${UK[@]}" import "$WORK/u/bb" -t localhost/busybox --cmd /bin/sh -o "oci-archive:$WORK/u/busybox.tar" >/dev/null
  # The corpus has no shell: the big base is the corpus with the busybox tree on top, one layer.
  tar -cf "$WORK/u/corpus-base.tar" -C "$CORPUS" . -C "$WORK/u/bb" . && chmod 644 "$WORK/u/corpus-base.tar"
  as_user "${UK[@]}" import "$WORK/u/corpus-base.tar" -t localhost/corpus -o "oci-archive:$WORK/u/corpus.tar" >/dev/null
  rm -f "$WORK/u/corpus-base.tar"
  as_user "${UB[@]}" tag "$(as_user "${UB[@]}" pull -q "oci-archive:$WORK/u/busybox.tar" | tail -1)" localhost/busybox
  as_user "${UB[@]}" tag "$(as_user "${UB[@]}" pull -q "oci-archive:$WORK/u/corpus.tar" | tail -1)" localhost/corpus
}
buildah_rmi() { # NAME
  as_user "${UB[@]}" rmi -f "$1" >/dev/null 2>&1 || true
  as_user "${UB[@]}" rmi --prune >/dev/null 2>&1 || true
}
kiln_run() { # true|big ROUND  (--network none, as buildah's: the default adds pasta, ~80 ms a step)
  measure run "kiln run $1" "$2" "${AS_USER[@]}" "${UK[@]}" build "$WORK/u/ctx" -f "$WORK/u/Dockerfile.$1" -t "run-$1" --no-cache --network none || return 0
}
buildah_run() { # true|big ROUND
  measure run "buildah run $1" "$2" "${AS_USER[@]}" "${UB[@]}" bud --runtime runc --network none --layers --no-cache \
    -f "$WORK/u/Dockerfile.$1" -t "localhost/run-$1" "$WORK/u/ctx" || return 0
  buildah_rmi "localhost/run-$1"
}
DEBIAN=/var/tmp/kiln-sandbox-bookworm   # the tests' cache (tests/it/support/runas/debootstrap.rs)
debian_mirror() {
  local u
  u=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | grep -v security | head -1)
  [ -n "$u" ] || u=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^http/ && $i !~ /security/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null)
  echo "${u:-http://deb.debian.org/debian}"
}
minimal_setup() {
  user_setup
  if [ ! -x "$DEBIAN/usr/bin/apt-get" ]; then
    log "debootstrap --variant=minbase bookworm (once per machine)"
    rm -rf "$DEBIAN.tmp"
    debootstrap --variant=minbase bookworm "$DEBIAN.tmp" "$(debian_mirror)" > "$WORK/debootstrap.log" 2>&1
    mv "$DEBIAN.tmp" "$DEBIAN"
  fi
  if [ ! -f "$DEBIAN.tar" ] || [ "$DEBIAN.tar" -ot "$DEBIAN" ]; then
    tar -C "$DEBIAN" --numeric-owner -cf "$DEBIAN.tar.tmp" . && chmod 644 "$DEBIAN.tar.tmp" && mv "$DEBIAN.tar.tmp" "$DEBIAN.tar"
  fi
  mkdir -p "$WORK/u/minimal"; cp variants/Dockerfile.minimal "$WORK/u/minimal/Dockerfile"
  [ "$(id -u)" -eq 0 ] && chown -R "$RUNUSER:" "$WORK/u/minimal"
  as_user "${UK[@]}" import "$DEBIAN.tar" -t localhost/debian:bookworm-minbase -o "oci-archive:$WORK/u/debian.tar" >/dev/null
  as_user "${UB[@]}" tag "$(as_user "${UB[@]}" pull -q "oci-archive:$WORK/u/debian.tar" | tail -1)" localhost/debian:bookworm-minbase
}
MIN_ARGS=(--build-arg BASE=localhost/debian:bookworm-minbase --build-arg VERSION=1.4.0 --no-cache)
kiln_minimal() { # ROUND
  measure minimal "kiln build minimal" "$1" "${AS_USER[@]}" "${UK[@]}" build "$WORK/u/minimal" -t sandbox-minimal "${MIN_ARGS[@]}" || return 0
}
buildah_minimal() { # ROUND  (host network: rootless slirp4netns cannot open /dev/net/tun here)
  measure minimal "buildah bud minimal" "$1" "${AS_USER[@]}" "${UB[@]}" bud --runtime runc --network host --layers \
    "${MIN_ARGS[@]}" -t localhost/sandbox-minimal "$WORK/u/minimal" || return 0
  buildah_rmi localhost/sandbox-minimal
}

# ---------- scale ----------
scale_setup() {
  local sizes files
  if [ "$QUICK" = 1 ]; then sizes="10m:$((10 << 20)) 100m:$((100 << 20))"; files="1000 10000"
  else sizes="10m:$((10 << 20)) 100m:$((100 << 20)) 1g:big 4g:repeat"; files="1000 10000 100000"; fi
  SCALE_TREES=()
  for s in $sizes; do
    local tag=${s%%:*} spec=${s#*:} dir
    case $spec in
      big) dir=$BIG ;;
      repeat) dir=$(scripts/make-corpus.sh --repeat 4 "$BIG" /tmp/kiln-corpus-4g) ;;
      *) dir=$(scripts/make-corpus.sh --subset "$spec" "$BIG" "/tmp/kiln-corpus-$tag") ;;
    esac
    SCALE_TREES+=("bytes:$tag:$dir")
  done
  for n in $files; do
    SCALE_TREES+=("files:$n:$(scripts/make-corpus.sh --files "$n" "/tmp/kiln-files-$n")")
  done
  for t in "${SCALE_TREES[@]}"; do
    local kind=${t%%:*} rest=${t#*:}; local tag=${rest%%:*} dir=${rest#*:}
    printf '%s\t%s\t%s\t%s\t%s\n' "$kind" "$tag" "$dir" "$(du -sb --apparent-size "$dir" | cut -f1)" "$(find "$dir" -type f | wc -l)" >> "$OUT/scale.tsv"
  done
}

# ---------- set-up of the sections asked for ----------
want ceiling && { log "ceiling: kiln's own tar stream + a sample"; ceiling_setup; }
want build && build_setup
want push && { log "push: registry + images"; push_setup; }
want run && { log "run: rootless user, busybox and big bases"; run_setup; }
want minimal && { log "minimal: Debian base"; minimal_setup; }
want scale && { log "scale: trees"; scale_setup; }
echo "load_after_setup	$(load)" >> "$OUT/meta.tsv"

log "corpus: $CORPUS ($(du -sh "$CORPUS" | cut -f1)), runs: $RUNS, load: $(load)"
for i in $(seq 1 "$RUNS"); do
  if want layer; then
    log "round $i/$RUNS: layer"
    kiln_layer layer gzip "$i";   umoci_insert "$i"
    kiln_layer layer gzip:6 "$i"; tarpipe "$i" "tar|pigz -6|sha256sum" "pigz -6"
    kiln_layer layer zstd:3 "$i"; tarpipe "$i" "tar|zstd -3 -T2|sha256sum" "zstd -q -3 -T2"
  fi
  if want ceiling; then
    log "round $i/$RUNS: ceiling"
    kiln_layer ceiling none "$i"
    pipeline ceiling "openssl dgst -sha256" "$i" "openssl dgst -sha256 '$WORK/layer.tar'"
    pipeline ceiling "tar|cat" "$i" "tar -C '$CORPUS' -cf - . | cat > /dev/null"
    pipeline ceiling "gzip -6 (1 core, sample)" "$i" "gzip -6 < '$WORK/sample.tar' > '$WORK/pipe.out'"
    pipeline ceiling "zstd -3 -T1 (1 core, sample)" "$i" "zstd -q -3 -T1 < '$WORK/sample.tar' > '$WORK/pipe.out'"
  fi
  if want build; then
    log "round $i/$RUNS: build"
    kiln_build cold "$i"; buildah_build cold "$i"
    kiln_build warm "$i"; buildah_build warm "$i"
    change_onefile "k$i"; kiln_build onefile "$i"
    change_onefile "b$i"; buildah_build onefile "$i"
  fi
  if want push; then
    log "round $i/$RUNS: push"
    kiln_push cold "$i"; skopeo_push cold "$i"
    kiln_push warm "$i"; skopeo_push warm "$i"
  fi
  if want run; then
    log "round $i/$RUNS: run"
    kiln_run true "$i"; buildah_run true "$i"
    kiln_run big "$i";  buildah_run big "$i"
  fi
  if want minimal; then
    log "round $i/$RUNS: minimal"
    kiln_minimal "$i"; buildah_minimal "$i"
  fi
  if want scale && [ "$i" -le "$SCALE_RUNS" ]; then
    log "round $i/$RUNS: scale"
    for t in "${SCALE_TREES[@]}"; do
      kind=${t%%:*}; rest=${t#*:}; tag=${rest%%:*}; dir=${rest#*:}
      kiln_layer scale gzip "$i" "$dir" "scale $kind $tag"
    done
  fi
done

if [ "$PROFILE" = 1 ]; then
  if command -v perf >/dev/null; then
    log "profile: perf record of kiln layer (default gzip)"
    rm -rf "$WORK/kroot"
    perf record -F 499 -g -o "$WORK/perf.data" -- "$KILN" --root "$WORK/kroot" --progress quiet layer "$CORPUS" > /dev/null 2> "$WORK/perf.err" || cat "$WORK/perf.err" >&2
    perf report -i "$WORK/perf.data" --stdio --no-children --sort symbol --percent-limit 0.5 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed 's/[ -]*$//' | head -25 > "$OUT/profile.txt" || true
    echo "top symbols (self time) of kiln layer, default gzip:" >&2; cat "$OUT/profile.txt" >&2
  else
    log "--profile: perf is not available (apt-get install linux-perf)"
  fi
fi

T1=$(date +%s)
{ echo "load_end	$(load)"; echo "elapsed_s	$((T1 - T0))"; echo "only	${ONLY:-all}"; } >> "$OUT/meta.tsv"
DOCARGS=(--docs "$DOCS"); [ "$NODOCS" = 1 ] && DOCARGS=()
python3 scripts/plot_bench.py "$OUT" "${DOCARGS[@]}"
log "done in $(( (T1 - T0) / 60 )) min $(( (T1 - T0) % 60 )) s (load at start $LOAD_START, at end $(load))"
exit 0
}
