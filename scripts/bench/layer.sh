# shellcheck shell=bash
# layer.sh - the layer section: one directory (the corpus) to one layer blob, kiln against the
# tools a user would reach for. Targets:
#   kiln layer (gzip)       vs umoci insert                     ≤ 0.75×, size ≤ umoci's
#   kiln layer gzip:6       vs tar | pigz -6 | sha256sum         ≤ 0.45×, size within 1%
#   kiln layer zstd:3       vs tar | zstd -3 -T2 | sha256sum     ≤ 1.0×
# And --profile: a perf profile of kiln layer (default gzip) on the corpus.

umoci_insert() { # ROUND
  rm -rf "$WORK/umoci"
  umoci init --layout "$WORK/umoci" >/dev/null && umoci new --image "$WORK/umoci:base" >/dev/null
  measure layer "umoci insert" "$1" umoci insert --image "$WORK/umoci:base" "$CORPUS" /corpus || return 0
  size_of "umoci insert" "$1" "$(find "$WORK/umoci/blobs" -type f -size +100k -printf '%s\n' | sort -n | tail -1)"
}
tarpipe() { # ROUND NAME COMPRESSOR
  pipeline layer "$2" "$1" "tar -C '$CORPUS' -cf - . | $3 | tee '$WORK/pipe.out' | sha256sum"
}

layer_round() { # ROUND: kiln and its peer alternated
  kiln_layer layer gzip "$1";   umoci_insert "$1"
  kiln_layer layer gzip:6 "$1"; tarpipe "$1" "tar|pigz -6|sha256sum" "pigz -6"
  kiln_layer layer zstd:3 "$1"; tarpipe "$1" "tar|zstd -3 -T2|sha256sum" "zstd -q -3 -T2"
}

layer_profile() { # the top symbols (self time) of kiln layer → OUT/profile.txt
  if command -v perf >/dev/null; then
    log "profile: perf record of kiln layer (default gzip)"
    rm -rf "$WORK/kroot"
    perf record -F 499 -g -o "$WORK/perf.data" -- "$KILN" --root "$WORK/kroot" --progress quiet layer "$CORPUS" > /dev/null 2> "$WORK/perf.err" || cat "$WORK/perf.err" >&2
    perf report -i "$WORK/perf.data" --stdio --no-children --sort symbol --percent-limit 0.5 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed 's/[ -]*$//' | head -25 > "$OUT/profile.txt" || true
    echo "top symbols (self time) of kiln layer, default gzip:" >&2; cat "$OUT/profile.txt" >&2
  else
    log "--profile: perf is not available (apt-get install linux-perf)"
  fi
}
