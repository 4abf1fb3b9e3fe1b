# shellcheck shell=bash
# scale.sh - the scale section, kiln alone (min(RUNS, 3) rounds): kiln layer (default gzip)
# time and peak RSS for trees of 10 MiB, 100 MiB, 1 GiB, 4 GiB and for 1k, 10k, 100k small files
# (--quick: 10 MiB, 100 MiB, 1k, 10k); peak RSS ≤ 64 MiB for 1 GiB; exponent of the log-log
# fit ≈ 1 (linear). The trees come from make-corpus.sh and are listed in OUT/scale.tsv.

scale_setup() { # SCALE_TREES: KIND:TAG:DIR of every tree
  log "scale: trees"
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

scale_round() { # ROUND
  local t kind rest tag dir
  for t in "${SCALE_TREES[@]}"; do
    kind=${t%%:*}; rest=${t#*:}; tag=${rest%%:*}; dir=${rest#*:}
    kiln_layer scale gzip "$1" "$dir" "scale $kind $tag"
  done
}
