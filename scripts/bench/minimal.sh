# shellcheck shell=bash
# minimal.sh - the minimal section: variants/Dockerfile.minimal on a debootstrap Debian base
# (imported with kiln import), rootless (user.sh), --no-cache, kiln build vs buildah bud.
# apt-get needs the Debian mirror; no target.

DEBIAN=/var/tmp/kiln-sandbox-bookworm   # the tests' cache (tests/it/support/runas/debootstrap.rs)
debian_mirror() {
  local u
  u=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | grep -v security | head -1)
  [ -n "$u" ] || u=$(awk '$1=="deb"{for(i=2;i<=NF;i++) if ($i ~ /^http/ && $i !~ /security/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null)
  echo "${u:-http://deb.debian.org/debian}"
}
minimal_setup() { # the Debian base (debootstrapped once per machine), in both stores
  log "minimal: Debian base"
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

minimal_round() { # ROUND
  kiln_minimal "$1"; buildah_minimal "$1"
}
