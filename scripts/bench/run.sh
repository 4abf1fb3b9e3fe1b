# shellcheck shell=bash
# run.sh - the run section, rootless (user.sh: unprivileged user, subordinate ids, runc, vfs):
# 20 × RUN true on a busybox base ≤ 0.25×; one RUN changing one file in the ≥1 GiB image (the
# corpus with busybox on top, one layer) ≤ 0.25×. kiln build vs buildah bud, both --no-cache.

run_setup() { # the busybox and the big base, imported by kiln, pulled into buildah's store
  log "run: rootless user, busybox and big bases"
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
kiln_run() { # true|big ROUND  (--network none, as buildah's: the default adds pasta, ~80 ms a step)
  measure run "kiln run $1" "$2" "${AS_USER[@]}" "${UK[@]}" build "$WORK/u/ctx" -f "$WORK/u/Dockerfile.$1" -t "run-$1" --no-cache --network none || return 0
}
buildah_run() { # true|big ROUND
  measure run "buildah run $1" "$2" "${AS_USER[@]}" "${UB[@]}" bud --runtime runc --network none --layers --no-cache \
    -f "$WORK/u/Dockerfile.$1" -t "localhost/run-$1" "$WORK/u/ctx" || return 0
  buildah_rmi "localhost/run-$1"
}

run_round() { # ROUND
  kiln_run true "$1"; buildah_run true "$1"
  kiln_run big "$1";  buildah_run big "$1"
}
