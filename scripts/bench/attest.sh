# shellcheck shell=bash
# attest.sh - the attest section (issue #19): what `--sbom --provenance=mode=max` adds to a build of
# the family's python variant (variants/Dockerfile.python plus one trailing `COPY stamp.txt`) on the
# debootstrap Debian base, kiln alone, as the caller (root: attestations do not depend on the
# user). Targets: attestations add <= 5% to a cold build, <= 0.2 s to a one-layer rebuild.
#   cold:        a fresh store each run (no layer cache, no SBOM cache), --no-cache, with and
#                without attestations, alternated (the order swapped every other round);
#   incremental: on the store the cold run left, stamp.txt changed (one new layer), with and
#                without, alternated
#                (each rebuild with attestations rescans only the new layer: the metadata file's
#                attestations.sbom_layers_scanned is recorded in sizes.tsv as "layers scanned").
# apt-get and pip need Debian's mirror and PyPI: the cold pair's ratio includes their noise.

attest_setup() {
  log "attest: Debian base, python context"
  if [ ! -x "$DEBIAN/usr/bin/apt-get" ]; then
    rm -rf "$DEBIAN.tmp"
    debootstrap --variant=minbase bookworm "$DEBIAN.tmp" "$(debian_mirror)" > "$WORK/debootstrap.log" 2>&1
    mv "$DEBIAN.tmp" "$DEBIAN"
  fi
  if [ ! -f "$DEBIAN.tar" ] || [ "$DEBIAN.tar" -ot "$DEBIAN" ]; then
    tar -C "$DEBIAN" --numeric-owner -cf "$DEBIAN.tar.tmp" . && chmod 644 "$DEBIAN.tar.tmp" && mv "$DEBIAN.tar.tmp" "$DEBIAN.tar"
  fi
  mkdir -p "$WORK/attest/ctx"
  cp variants/Dockerfile.python variants/requirements-python.txt "$WORK/attest/ctx/"
  { cat variants/Dockerfile.python; echo "COPY stamp.txt /stamp.txt"; } > "$WORK/attest/ctx/Dockerfile"
  echo 0 > "$WORK/attest/ctx/stamp.txt"
}
ATTEST_ARGS=(--build-arg BASE=localhost/debian:bookworm-minbase --build-arg VERSION=1.4.0 -t sandbox-python)
# A TLS-intercepting proxy's CA for pip, as the tests pass it (tests/it/bake.rs pip_ca).
for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}"; do
  [ -n "$ca" ] && [ -f "$ca" ] && { ATTEST_ARGS+=(--secret "id=pip-ca,src=$ca"); break; }
done
ATTEST_ON=(--sbom --provenance=mode=max)
attest_store() { # NAME: a fresh store with the base imported
  rm -rf "$WORK/attest/$1"
  "$KILN" --root "$WORK/attest/$1" --progress quiet import "$DEBIAN.tar" -t localhost/debian:bookworm-minbase >/dev/null
}
attest_cold() { # ROUND WITH(0|1): a fresh store, kept as the incremental pair's warm store
  local name=plain args=()
  [ "$2" = 1 ] && { name=attest; args=("${ATTEST_ON[@]}"); }
  attest_store "warm-$name"
  measure attest "kiln build python cold ($name)" "$1" "$KILN" --root "$WORK/attest/warm-$name" --progress quiet \
    build "$WORK/attest/ctx" "${ATTEST_ARGS[@]}" --no-cache "${args[@]}" || true
}
attest_incremental() { # ROUND WITH(0|1)
  local name=plain store=warm-plain args=()
  [ "$2" = 1 ] && { name=attest; store=warm-attest; args=("${ATTEST_ON[@]}" --metadata-file "$WORK/attest/meta.json"); }
  date +%s%N > "$WORK/attest/ctx/stamp.txt"
  measure attest "kiln build python one layer ($name)" "$1" "$KILN" --root "$WORK/attest/$store" --progress quiet \
    build "$WORK/attest/ctx" "${ATTEST_ARGS[@]}" "${args[@]}" || return 0
  [ "$2" = 1 ] && size_of "layers scanned" "$1" \
    "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["attestations"]["sbom_layers_scanned"])' "$WORK/attest/meta.json")"
  return 0
}
attest_round() { # ROUND: A B A B, the order swapped every other round
  if [ $(( $1 % 2 )) = 1 ]; then attest_cold "$1" 0; attest_cold "$1" 1
  else attest_cold "$1" 1; attest_cold "$1" 0; fi
  for _ in 1 2; do attest_incremental "$1" 0; attest_incremental "$1" 1; done
}
