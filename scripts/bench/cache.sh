# shellcheck shell=bash
# cache.sh - the cache section (issue #17), rootless (user.sh: unprivileged user, subordinate ids,
# runc, vfs): a RUN-heavy synthetic Dockerfile (busybox base from a local registry, no network)
# built once by "runner A" with the registry cache, then measured on fresh stores ("runner B",
# a new store every run) reading that cache: kiln build --cache-from type=registry vs buildah bud
# --layers --cache-from (1.28). Nothing changed: ≤ 0.25× buildah's time and bytes downloaded
# ≤ 1% of buildah's; one context file changed (the steps after it run): reported. The bytes are
# the GET response sizes in the registry's access log during the run (cache-bytes.tsv under
# --out). Measured runs read the cache only: runner A wrote it (kiln mode=max, buildah
# --cache-to) in the set-up, so every round sees the same cache.

CACHE_REG_PID=
CREG=
cache_registry() { # a plain-HTTP docker-registry with its access log on (CREG, CACHE_REG_PID)
  local port; port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  CREG=127.0.0.1:$port
  mkdir -p "$WORK/creg/data"
  cat > "$WORK/creg/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $WORK/creg/data
  delete:
    enabled: true
http:
  addr: $CREG
YML
  docker-registry serve "$WORK/creg/config.yml" > "$WORK/creg/access.log" 2>&1 &
  # shellcheck disable=SC2034  # stopped by lib.sh's cleanup
  CACHE_REG_PID=$!
  for _ in $(seq 1 50); do curl -fsS "http://$CREG/v2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the cache registry did not start" >&2; exit 1
}
get_bytes_since() { # LINE: the bytes of the GET responses logged after line LINE of the access log
  tail -n +"$(( $1 + 1 ))" "$WORK/creg/access.log" | awk '
    { q = index($0, "\""); if (!q) next; rest = substr($0, q + 1); split(rest, r, " ")
      if (r[1] != "GET") next
      e = index(rest, "\""); split(substr(rest, e + 1), s, " ")
      if (s[1] ~ /^2/ && s[2] ~ /^[0-9]+$/) n += s[2] }
    END { print n + 0 }'
}
log_lines() { wc -l < "$WORK/creg/access.log"; }
wipe() { # DIR: a store the user's steps wrote (subordinate owners): removed inside its namespace
  [ -e "$1" ] || return 0
  if [ "$(id -u)" -eq 0 ]; then rm -rf "$1"; else as_user buildah unshare rm -rf "$1"; fi
}
CK=("$WORK/u/kiln" --progress quiet)
CB_OPTS=(--storage-driver vfs)

cache_setup() { # the registry, the busybox base in it, the Dockerfile; runner A writes both caches
  log "cache: registry, base, runner A (kiln and buildah write their caches)"
  user_setup
  cache_registry
  local bb=$WORK/u/cbb
  mkdir -p "$bb/bin" "$bb/tmp" "$bb/etc" "$bb/dev" && chmod 1777 "$bb/tmp"
  cp "$(command -v busybox)" "$bb/bin/busybox"
  for a in sh mkdir dd gzip cat md5sum echo true; do ln -sf busybox "$bb/bin/$a"; done
  mkdir -p "$WORK/u/cctx"
  echo "input 0" > "$WORK/u/cctx/input.txt"
  cat > "$WORK/u/cctx/Dockerfile" <<DF
FROM $CREG/bench/busybox:1
RUN mkdir -p /data && dd if=/dev/urandom of=/data/a bs=1M count=24 2>/dev/null
RUN mkdir -p /data/many && cd /data/many && i=0 && while [ \$i -lt 1500 ]; do echo "file \$i" > f\$i; i=\$((i+1)); done
RUN dd if=/dev/urandom bs=1M count=16 2>/dev/null | gzip -1 > /data/b.gz
RUN n=0 && while [ \$n -lt 300000 ]; do n=\$((n+1)); done && echo \$n > /data/count
COPY input.txt /input.txt
RUN cat /input.txt /data/count > /data/summary && dd if=/dev/urandom of=/data/c bs=1M count=8 2>/dev/null
RUN md5sum /data/a /data/summary > /data/sums
DF
  # buildah (containers/image) reaches the plain-HTTP registry through an insecure entry.
  mkdir -p "$WORK/u/home/.config/containers"
  printf 'unqualified-search-registries = []\n[[registry]]\nlocation = "%s"\ninsecure = true\n' "$CREG" \
    > "$WORK/u/home/.config/containers/registries.conf"
  [ "$(id -u)" -eq 0 ] && chown -R "$RUNUSER:" "$WORK/u"
  as_user "${CK[@]}" --root "$WORK/u/cseed" import "$bb" -t localhost/busybox --cmd /bin/sh >/dev/null
  as_user "${CK[@]}" --root "$WORK/u/cseed" push localhost/busybox "$CREG/bench/busybox:1" >/dev/null
  as_user "${CK[@]}" --root "$WORK/u/ka" build "$WORK/u/cctx" -t cache-a --network none \
    --cache-to "type=registry,ref=$CREG/bench/kcache:1,mode=max" >/dev/null
  as_user buildah --root "$WORK/u/ba" --runroot "$WORK/u/bar" "${CB_OPTS[@]}" bud --runtime runc --network none \
    --layers --cache-to "$CREG/bench/bcache" -t localhost/cache-a "$WORK/u/cctx" >/dev/null
  wipe "$WORK/u/ka"; wipe "$WORK/u/ba"; wipe "$WORK/u/bar"
}
cache_bytes() { # NAME ROUND LINE: the bytes this run downloaded, to cache-bytes.tsv
  printf '%s\t%s\t%s\n' "$1" "$2" "$(get_bytes_since "$3")" >> "$OUT/cache-bytes.tsv"
}
kiln_cache() { # nothing|onefile ROUND  (a fresh store every run)
  wipe "$WORK/u/kb"
  local mark; mark=$(log_lines)
  measure cache "kiln cache $1" "$2" "${AS_USER[@]}" "${CK[@]}" --root "$WORK/u/kb" build "$WORK/u/cctx" \
    -t cache-b --network none --cache-from "type=registry,ref=$CREG/bench/kcache:1" || return 0
  sleep 0.3; cache_bytes "kiln cache $1" "$2" "$mark"
}
buildah_cache() { # nothing|onefile ROUND
  wipe "$WORK/u/bb-root"; wipe "$WORK/u/bb-run"
  local mark; mark=$(log_lines)
  measure cache "buildah cache $1" "$2" "${AS_USER[@]}" buildah --root "$WORK/u/bb-root" --runroot "$WORK/u/bb-run" \
    "${CB_OPTS[@]}" bud --runtime runc --network none --layers --cache-from "$CREG/bench/bcache" \
    -t localhost/cache-b "$WORK/u/cctx" || return 0
  sleep 0.3; cache_bytes "buildah cache $1" "$2" "$mark"
}
cache_input() { # TEXT: the context file the one-file case changes
  echo "$1" > "$WORK/u/cctx/input.txt"
  [ "$(id -u)" -eq 0 ] && chown "$RUNUSER:" "$WORK/u/cctx/input.txt"
  return 0
}

cache_round() { # ROUND
  cache_input "input 0"
  kiln_cache nothing "$1"; buildah_cache nothing "$1"
  cache_input "input changed $1"
  kiln_cache onefile "$1"; buildah_cache onefile "$1"
  cache_input "input 0"
}
