#!/usr/bin/env bash
# build-family.sh - builds the whole image family (every variants/Dockerfile*) with kiln, on a
# Debian bookworm base made by debootstrap, with nothing from the network but Debian's archive,
# PyPI and npm, then checks every variant. Runs as root, or as an unprivileged user with
# subordinate ids (/etc/subuid, /etc/subgid); never calls sudo.
#   1. the base: $DEBIAN_ROOTFS, a debootstrap tree (directory) or a tarball of one (numeric
#      owners). As root it is made when missing (`debootstrap --variant=minbase bookworm`); an
#      unprivileged user cannot run debootstrap, so it must be given (or be the tarball root
#      left at /var/tmp/kiln-sandbox-bookworm.tar): the script says how to make it and exits 2,
#   2. a local registry (Debian's docker-registry) on a free port,
#   3. the base imported and pushed there as a mirror of docker.io/library/debian:bookworm-slim,
#   4. `kiln bake --push` of every variant (or the TARGETs given) at the version in kiln.toml,
#   5. every variant pulled and run with podman: `id -u` is 1000, /tmp is 1777 and writable by
#      it, `python3 --version` (python, full), `node --version` (node, full), and no stale .pyc
#      (scripts/check-pyc.py run by the image's own Python).
# Exits non-zero on any failure, after checking every variant. The digests file is left in
# $OUT/digests.json. Needs: docker-registry, podman, rootless RUN (user namespaces); debootstrap
# when root has to make the base.
#
#   scripts/build-family.sh [BAKE-ARG...] [TARGET...]   # default: every variant
#   OUT=/tmp/a scripts/build-family.sh --no-cache       # a fresh store of your own
#
# Per-user paths: $OUT (default target/family in this work tree) holds the store, the registry,
# podman's storage and the digests file; the default base is $XDG_CACHE_HOME/kiln (~/.cache/kiln)
# for a user, /var/tmp/kiln-sandbox-bookworm for root (where the test suite caches it).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-$REPO/target/family}"
KILN="${KILN:-$REPO/target/release/kiln}"
uid="$(id -u)"
if [ "$uid" = 0 ]; then
  DEBIAN_ROOTFS="${DEBIAN_ROOTFS:-/var/tmp/kiln-sandbox-bookworm}"
else
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/kiln"
  if [ -z "${DEBIAN_ROOTFS:-}" ]; then
    DEBIAN_ROOTFS="$cache/bookworm-minbase.tar"
    [ -e "$DEBIAN_ROOTFS" ] || [ ! -r /var/tmp/kiln-sandbox-bookworm.tar ] ||
      DEBIAN_ROOTFS=/var/tmp/kiln-sandbox-bookworm.tar
  fi
fi
mkdir -p "$OUT"
[ -x "$KILN" ] || cargo build --release --locked
export KILN_ROOT="$OUT/store"
# The generated config below may live outside the work tree: name the commit for `sha-{gitsha}`.
if [ -z "${GITHUB_SHA:-}" ]; then
  GITHUB_SHA="$(git rev-parse HEAD 2>/dev/null)" ||
    { echo "error: cannot read the commit of $REPO (git rev-parse HEAD): set GITHUB_SHA" >&2; exit 2; }
fi
export GITHUB_SHA

# 1. The base.
if [ ! -e "$DEBIAN_ROOTFS" ]; then
  if [ "$uid" != 0 ]; then
    cat >&2 <<EOF
error: no Debian base at $DEBIAN_ROOTFS, and debootstrap needs root. As root, once:
  debootstrap --variant=minbase bookworm /var/tmp/kiln-sandbox-bookworm http://deb.debian.org/debian
  tar -C /var/tmp/kiln-sandbox-bookworm --numeric-owner -cf /var/tmp/kiln-sandbox-bookworm.tar .
then run this script again (or set DEBIAN_ROOTFS to that tarball).
EOF
    exit 2
  fi
  command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed" >&2; exit 2; }
  echo "debootstrap: bookworm minbase into $DEBIAN_ROOTFS" >&2
  debootstrap --variant=minbase bookworm "$DEBIAN_ROOTFS.tmp" http://deb.debian.org/debian
  mv "$DEBIAN_ROOTFS.tmp" "$DEBIAN_ROOTFS"
fi
if [ -d "$DEBIAN_ROOTFS" ] && [ ! -x "$DEBIAN_ROOTFS/usr/bin/apt-get" ]; then
  echo "error: $DEBIAN_ROOTFS is not a Debian tree (no usr/bin/apt-get)" >&2
  exit 2
fi

# 2. The registry.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
reg="127.0.0.1:$port"
mkdir -p "$OUT/registry"
cat > "$OUT/registry/config.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $OUT/registry/data
http:
  addr: $reg
YAML
docker-registry serve "$OUT/registry/config.yml" >"$OUT/registry/log" 2>&1 &
registry_pid=$!
trap 'kill "$registry_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -fs "http://$reg/v2/" >/dev/null && break; sleep 0.1; done

# 3. The base, as docker.io/library/debian:bookworm-slim through a mirror entry.
"$KILN" import "$DEBIAN_ROOTFS" -t debian-base:bookworm --cmd bash \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
"$KILN" --tls-verify=false push debian-base:bookworm "$reg/mirror/library/debian:bookworm-slim"

# The project's kiln.toml with absolute paths, the local repository and the mirror.
config="$OUT/kiln.toml"
sed -e "s|^variants_dir = .*|variants_dir = \"$REPO/variants\"|" \
    -e "s|^registry = .*|registry = \"$reg/kiln\"|" kiln.toml > "$config"
cat >> "$config" <<TOML

[[registry]]
prefix = "docker.io"
mirrors = [{ location = "$reg/mirror", insecure = true }]
TOML

# 4. The bake. Behind a TLS-intercepting proxy, pip needs its CA: a build secret, never stored
# in a layer.
secret=()
for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}"; do
  if [ -n "$ca" ] && [ -f "$ca" ]; then secret=(--secret "id=pip-ca,src=$ca"); break; fi
done
"$KILN" --progress plain --tls-verify=false --config "$config" bake --push \
  "${secret[@]}" --metadata-file "$OUT/digests.json" "$@"
echo "digests: $OUT/digests.json" >&2

# 5. Every variant, checked.
command -v podman >/dev/null || { echo "error: podman is not installed: nothing checked" >&2; exit 1; }
pod=(podman --root "$OUT/podman/root" --runroot "$OUT/podman/run" --storage-driver vfs)
run=(run --rm --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --network none)
failures=0
fail() { echo "FAIL $1" >&2; failures=$((failures + 1)); }
targets="$(python3 -c '
import json, sys
for name, t in sorted(json.load(open(sys.argv[1]))["targets"].items()):
    print(name, t["tags"][0])
' "$OUT/digests.json")"
while read -r target ref; do
  echo "== $target ($ref)" >&2
  if ! "${pod[@]}" pull -q --tls-verify=false "$ref" </dev/null >/dev/null; then
    fail "$target: podman pull $ref"; continue
  fi
  # One container per variant (each costs a copy of the image with vfs). The whole output is
  # kept: no `| head` (a closed pipe kills the writer, and pipefail fails the script).
  script='echo "uid $(id -u)"; echo "tmp $(stat -c %a /tmp)"; touch /tmp/kiln-check && echo "tmp writable"'
  case "$target" in python | full) script+='; python3 --version; python3 -B -' ;; esac
  case "$target" in node | full) script+='; echo "node $(node --version)"' ;; esac
  out="$("${pod[@]}" "${run[@]}" -i "$ref" bash -c "$script" < scripts/check-pyc.py 2>&1)" || true
  echo "$out" >&2
  has() { grep -qxE "$1" <<< "$out"; }
  has 'uid 1000' || fail "$target: id -u is not 1000"
  has 'tmp 1777' || fail "$target: /tmp is not mode 1777"
  has 'tmp writable' || fail "$target: /tmp is not writable by uid 1000"
  case "$target" in python | full)
    has 'Python 3\.[0-9]+\.[0-9]+' || fail "$target: no python3 --version"
    has 'checked [1-9][0-9]* \.pyc files .*: 0 stale' || fail "$target: stale .pyc files (scripts/check-pyc.py)"
  esac
  case "$target" in node | full)
    has 'node v[0-9]+\..*' || fail "$target: no node --version"
  esac
done <<< "$targets"
if [ "$failures" != 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "every variant checked: $(echo "$targets" | cut -d' ' -f1 | tr '\n' ' ')" >&2
