#!/usr/bin/env bash
# check-digests.sh - recompute the digests a refactor must not change and compare them with the
# values recorded on this machine (issue #16: "behaviour, image digests and cache keys must not
# change"). Each input is made and measured in a fresh store under a temporary directory:
#
#   corpus layer   the benchmark corpus (scripts/make-corpus.sh: a copy of this machine's Rust
#                  sysroot, ~1 GiB) written by `kiln layer DIR --source-date-epoch 0 --json`
#                  (default gzip): its digest and diff_id
#   example        scripts/main-job.sh's steps: `kiln import` of a busybox-static rootfs (the
#                  base's manifest digest; with --source-date-epoch 0, else its mtimes are the time
#                  the script ran), `kiln build fixtures/example` on it as main-job.sh runs it (the
#                  example's manifest digest), and the sha256 of its oci-archive and docker-archive
#   run            RUN steps on that base (the sandbox and its diff: new files, a symlink, a
#                  deletion, a step as USER nobody), --no-cache --network none, once with each
#                  snapshotter (overlay, walk): the image's manifest digest
#   cache keys     the cache key of every step of the example and the run (overlay) builds, in
#                  order, from their --metadata-file: the sha256 of the keys, one a line (a
#                  changed key makes every cache an older kiln left miss)
#
#   scripts/check-digests.sh [--kiln PATH] [--corpus DIR] [--print]
#     --kiln PATH   the binary to check (default target/release/kiln, built if missing)
#     --corpus DIR  the corpus (default: scripts/make-corpus.sh's /tmp/kiln-corpus, made if missing)
#     --print       print the digests as `NAME VALUE` lines, compare nothing (to record new values)
#
# Exit 0 when every digest matches, 1 when one differs, 2 on an error. The expected values below
# hold for this machine's toolchain and busybox-static package only: both are inputs. They were
# recorded from main at 301015f (before the issue #16 reshape); see /work/wt/baseline.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
unset SOURCE_DATE_EPOCH   # main-job.sh's build runs without one

# Values of main at 301015f, except example.oci-archive: since issue #18 (2f02845) the archive's
# index.json entry carries `io.containerd.image.name` and `org.opencontainers.image.ref.name`, as
# buildx writes them (the image itself, example.image, is unchanged; 301015f's file was
# sha256:220b304ce4ca944057f4a0467b08b5b8e4d8adb33bc053b89f710021a6f41283).
declare -A EXPECTED=(
  [corpus-layer.digest]=sha256:6d06297c9f09494f15156d47dffeacced969917bb2d9ce9ff304a81ea3f38cd5
  [corpus-layer.diff_id]=sha256:0d719088bfaed724b7d8b494d884c88fdf66467d5f8cbaf3e79d4bc119e231fa
  [example.base]=sha256:c1b26f97662ba77a8f6ad3e51142bff3e70424298cb656ef7b989ff9e09c2e64
  [example.image]=sha256:f3c2b3831e463585c616a6ea6f5b8ec0e043375fc7cb9228d3167b3c3722c7eb
  [example.oci-archive]=sha256:a4aca915efca4390c33d0f2301f52864603662af5ccd0a6658ae1c922812f5de
  [example.docker-archive]=sha256:e2f95397f73577c680f32705c0ef131d1bce93a49a290b863e4d466566b9b68a
  [run.overlay]=sha256:dbf2d9c6ad88b06099a10a38ffe454e7a20ac9b6c9e9b274c996b86a2b4d9f58
  [run.walk]=sha256:dbf2d9c6ad88b06099a10a38ffe454e7a20ac9b6c9e9b274c996b86a2b4d9f58
  [example.cache-keys]=sha256:c2100a1cbe35d2917751ae5ba1d19029296073af79530253ff3c2bc8a61fa896
  [run.cache-keys]=sha256:64988db5bd8171133e5911fb3dc97e87c1f496480f2e6561eadc049b9b1c9fad
)
ORDER=(corpus-layer.digest corpus-layer.diff_id example.base example.image example.oci-archive example.docker-archive
  run.overlay run.walk example.cache-keys run.cache-keys)

KILN=; CORPUS=; PRINT=0
while [ $# -gt 0 ]; do
  case $1 in
    --kiln) KILN=$(readlink -f "$2"); shift 2 ;;
    --corpus) CORPUS=$2; shift 2 ;;
    --print) PRINT=1; shift ;;
    -h|--help) sed -n '2,28p' "$0" >&2; exit 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$KILN" ]; then
  KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
  [ -x "$KILN" ] || cargo build --release --locked -q
fi
[ -x "$KILN" ] || { echo "no kiln binary at $KILN" >&2; exit 2; }
[ -n "$CORPUS" ] || CORPUS=$(scripts/make-corpus.sh)
command -v busybox >/dev/null || { echo "busybox is not installed (scripts/install-peers.sh)" >&2; exit 2; }

work=$(mktemp -d /tmp/kiln-check-digests.XXXXXX); trap 'rm -rf "$work"' EXIT
declare -A GOT
field() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
keys() { # METADATA-FILE: sha256 of the steps' cache keys, one a line, in order
  echo "sha256:$(python3 -c 'import json,sys;print("\n".join(s["cache_key"] for s in json.load(open(sys.argv[1]))["steps"]))' "$1" | sha256sum | cut -d' ' -f1)"
}

# The corpus layer.
"$KILN" --root "$work/layer-store" --progress quiet layer "$CORPUS" --source-date-epoch 0 --json > "$work/layer.json"
GOT[corpus-layer.digest]=$(field "$work/layer.json" digest)
GOT[corpus-layer.diff_id]=$(field "$work/layer.json" diff_id)

# The example: the rootfs exactly as scripts/main-job.sh makes it.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,var}
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list-full); do
  [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$rootfs/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
K=("$KILN" --root "$work/store" --progress quiet)
GOT[example.base]=$("${K[@]}" import "$rootfs" -t kiln.local/busybox:latest --cmd /bin/sh --source-date-epoch 0 \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
GOT[example.image]=$("${K[@]}" build fixtures/example -t kiln.local/example:latest --metadata-file "$work/example.json" \
  -o "oci-archive:$work/example.oci.tar" -o "docker-archive:$work/example.docker.tar:kiln.local/example:latest")
GOT[example.oci-archive]=sha256:$(sha256sum < "$work/example.oci.tar" | cut -d' ' -f1)
GOT[example.docker-archive]=sha256:$(sha256sum < "$work/example.docker.tar" | cut -d' ' -f1)
GOT[example.cache-keys]=$(keys "$work/example.json")

# RUN steps on the base, with each snapshotter.
mkdir -p "$work/run"
cat > "$work/run/Dockerfile" <<'EOF'
FROM kiln.local/busybox:latest
RUN mkdir -p /opt/app && echo hello > /opt/app/greeting && ln -s greeting /opt/app/link && rm /etc/group
USER nobody
RUN id > /tmp/id && chmod 600 /tmp/id
EOF
for s in overlay walk; do
  GOT[run.$s]=$("${K[@]}" build "$work/run" -t "kiln.local/run-$s:latest" --no-cache --network none --snapshotter "$s" \
    --metadata-file "$work/run-$s.json")
done
GOT[run.cache-keys]=$(keys "$work/run-overlay.json")

status=0
for k in "${ORDER[@]}"; do
  if [ "$PRINT" = 1 ]; then
    echo "$k ${GOT[$k]}"
  elif [ "${GOT[$k]}" = "${EXPECTED[$k]}" ]; then
    echo "ok        $k ${GOT[$k]}"
  else
    echo "DIFFERENT $k ${GOT[$k]} (expected ${EXPECTED[$k]})"; status=1
  fi
done
exit "$status"
