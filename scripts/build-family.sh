#!/usr/bin/env bash
# build-family.sh - builds the whole image family (every variants/Dockerfile*) with kiln, on a
# Debian bookworm base made here by debootstrap, with nothing from the network but Debian's
# archive and PyPI:
#   1. debootstrap --variant=minbase bookworm (reused from $DEBIAN_ROOTFS when it is there),
#   2. a local registry (Debian's docker-registry) on a free port,
#   3. the tree imported and pushed there as a mirror of docker.io/library/debian:bookworm-slim,
#   4. `kiln bake --push` of every variant at the version in kiln.toml, through that mirror,
#   5. each variant run with podman as uid 1000, answering bash/python3/node --version.
# The digests file is left in $OUT/digests.json. Needs: debootstrap, docker-registry, podman
# (for step 5), and rootless RUN (user namespaces).
#
#   scripts/build-family.sh [TARGET...]       # default: every variant
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
OUT="${OUT:-$REPO/target/family}"
DEBIAN_ROOTFS="${DEBIAN_ROOTFS:-/var/tmp/kiln-sandbox-bookworm}"
KILN="${KILN:-$REPO/target/release/kiln}"
mkdir -p "$OUT"
[ -x "$KILN" ] || cargo build --release --locked
export KILN_ROOT="$OUT/store"
# The generated config below may live outside the work tree: name the commit for `sha-{gitsha}`.
export GITHUB_SHA="${GITHUB_SHA:-$(git rev-parse HEAD)}"

if [ ! -x "$DEBIAN_ROOTFS/usr/bin/apt-get" ]; then
  echo "debootstrap: bookworm minbase into $DEBIAN_ROOTFS" >&2
  sudo debootstrap --variant=minbase bookworm "$DEBIAN_ROOTFS" http://deb.debian.org/debian
  sudo chown -R "$(id -u):$(id -g)" "$DEBIAN_ROOTFS" || true
fi

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

# The base, as docker.io/library/debian:bookworm-slim through a mirror entry.
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

# Behind a TLS-intercepting proxy, pip needs its CA: a build secret, never stored in a layer.
secret=()
for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}"; do
  if [ -n "$ca" ] && [ -f "$ca" ]; then secret=(--secret "id=pip-ca,src=$ca"); break; fi
done
"$KILN" --progress plain --tls-verify=false --config "$config" bake --push \
  "${secret[@]}" --metadata-file "$OUT/digests.json" "$@"
echo "digests: $OUT/digests.json" >&2

if command -v podman >/dev/null; then
  pod=(podman --root "$OUT/podman/root" --runroot "$OUT/podman/run" --storage-driver vfs)
  run=(run --rm --runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 --network none)
  python3 - "$OUT/digests.json" <<'PY' | while read -r target ref; do
import json, sys
for name, t in json.load(open(sys.argv[1]))["targets"].items():
    print(name, t["tags"][0])
PY
    case "$target" in
      python) cmd=(python3 --version) ;;
      node) cmd=(node --version) ;;
      full) cmd=(bash -c 'python3 --version && node --version') ;;
      *) cmd=(bash --version) ;;
    esac
    "${pod[@]}" pull -q --tls-verify=false "$ref" >/dev/null
    echo "== $target ($ref): uid $("${pod[@]}" "${run[@]}" "$ref" id -u)" >&2
    "${pod[@]}" "${run[@]}" "$ref" "${cmd[@]}" | head -1
  done
fi
