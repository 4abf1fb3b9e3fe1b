# shellcheck shell=bash
# push.sh - the push section: the corpus image pushed to a local plain-HTTP docker-registry,
# kiln push vs skopeo copy, cold (a new repository, every blob uploaded) and warm (every blob
# already there), ≤ 1.0×.

start_registry() { # a plain-HTTP docker-registry on a free loopback port (REG_PORT; lib.sh's cleanup stops it)
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
push_setup() { # the registry, the corpus image in kiln's store and as an OCI layout, both warm repositories
  log "push: registry + images"
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

push_round() { # ROUND
  kiln_push cold "$1"; skopeo_push cold "$1"
  kiln_push warm "$1"; skopeo_push warm "$1"
}
