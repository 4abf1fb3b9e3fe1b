# shellcheck shell=bash
# concurrency.sh - the concurrency section, kiln alone: the four variants/Dockerfile* (family.sh's
# cache and base, --no-cache, rootless), built by four kiln processes at once into one store, vs
# the same four in a row into that store, alternated per round. Target: the wall time of the
# four at once ≤ 1.05× the four in a row (on 2 cores neither can be much faster: the steps are
# CPU-bound; a lock convoy, one build waiting for another's store lock, would make it slower).
# After each round `kiln store fsck` must pass (every blob's digest and size, every reference):
# concurrency.tsv rows: fsck ROUND EXIT-CODE.

concurrency_setup() {
  [ -n "${PKG_PORT:-}" ] || family_setup   # the cache, base and variants (filled once)
  cat > "$WORK/u/conc.sh" <<'SH'
#!/bin/bash
# conc.sh seq|par KILN ROOT VARIANTS-DIR BUILD-ARGS...: the four variants, in a row or at once
mode=$1 kiln=$2 root=$3 ctx=$4; shift 4
pids=()
for v in minimal python node full; do
  f=Dockerfile.$v; [ "$v" = full ] && f=Dockerfile
  if [ "$mode" = seq ]; then
    "$kiln" --root "$root" --progress quiet build "$ctx" -f "$ctx/$f" -t "conc-$v" "$@" > /dev/null || exit 1
  else
    "$kiln" --root "$root" --progress quiet build "$ctx" -f "$ctx/$f" -t "conc-$v" "$@" > /dev/null & pids+=($!)
  fi
done
for p in "${pids[@]}"; do wait "$p" || exit 1; done
SH
  chmod 755 "$WORK/u/conc.sh"
  : > "$OUT/concurrency.tsv"
}
conc_run() { # seq|par ROUND
  measure concurrency "kiln 4 variants $1" "$2" "${AS_USER[@]}" "$WORK/u/conc.sh" "$1" "$WORK/u/kiln" "$WORK/u/kroot" \
    "$WORK/u/variants" "${FAM_ARGS[@]}" --allow network.host --network host || true
  local rc=0
  as_user "$WORK/u/kiln" --root "$WORK/u/kroot" --progress quiet store fsck > "$WORK/fsck.out" 2>&1 || rc=$?
  printf 'fsck\t%s\t%s\t%s\n' "$1" "$2" "$rc" >> "$OUT/concurrency.tsv"
  [ "$rc" = 0 ] || { echo "kiln store fsck failed after the $1 builds (round $2):" >&2; tail -5 "$WORK/fsck.out" >&2; }
}

concurrency_round() { # ROUND
  conc_run par "$1"; conc_run seq "$1"
}
