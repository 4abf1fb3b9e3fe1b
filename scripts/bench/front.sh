# shellcheck shell=bash
# front.sh - the front section: the size/speed front of one directory (the corpus) → one layer
# blob. Every setting a user picks, kiln's and its peers', alternated (a kiln setting, then a
# peer setting, …), all from the same tree:
#   kiln layer --compression gzip:1…9 and zstd:1…19 (kiln's default, `gzip`, is measured as
#     the layer section's `kiln layer gzip`, here as `front kiln gzip`)
#   tar | pigz -1…-9 -p 2 | tee | sha256sum, tar | gzip -6 (one core), tar | zstd -1…-19 -T2,
#   umoci insert, buildah's commit (`buildah bud` of FROM scratch + COPY to a gzip oci-archive)
# plot_bench.py (front.py) draws size against time with both fronts and checks, for every peer
# point, that some kiln setting is both smaller and faster; and kiln's default gzip at ≤ umoci's
# size in ≤ 0.55× umoci's time.
# The slow settings (zstd ≥ FRONT_SLOW_ZSTD, pigz -9 and gzip -6, 30 s - 3 min each on the 1 GiB
# corpus on 2 cores) are measured in round 1 only when FRONT_SLOW_ROUNDS=1 (the default), so a
# 3-round run takes ~1 h instead of ~3 h on 2 cores; BENCHMARKS.md says how many runs each point has.
# FRONT_MAX_ZSTD=N stops at zstd level N on a machine too loaded for the top levels.

FRONT_SLOW_ZSTD=${FRONT_SLOW_ZSTD:-13}
FRONT_MAX_ZSTD=${FRONT_MAX_ZSTD:-19}   # the highest zstd level measured (-19 is ~0.5 MB/s a core)
FRONT_SLOW_ROUNDS=${FRONT_SLOW_ROUNDS:-1}
FRONT_BUILDAH=(buildah --root "$WORK/fbuildah/root" --runroot "$WORK/fbuildah/run" --storage-driver vfs)

front_setup() { # front.tsv: the tree measured (the corpus, or --corpus)
  printf 'corpus\t%s\t%s\t%s\n' "$CORPUS" "$(du -sb "$CORPUS" | cut -f1)" "$(find "$CORPUS" | wc -l)" > "$OUT/front.tsv"
  printf 'FROM scratch\nCOPY . /corpus/\n' > "$WORK/Dockerfile.front"
  [ -d "$WORK/fctx" ] || cp -al "$CORPUS" "$WORK/fctx"
}
front_pipe() { # ROUND NAME COMPRESSOR
  pipeline front "$2" "$1" "tar -C '$CORPUS' -cf - . | $3 | tee '$WORK/pipe.out' | sha256sum"
  rm -f "$WORK/pipe.out"
}
front_umoci() { # ROUND
  rm -rf "$WORK/fumoci"
  umoci init --layout "$WORK/fumoci" >/dev/null && umoci new --image "$WORK/fumoci:base" >/dev/null
  measure front "front umoci insert" "$1" umoci insert --image "$WORK/fumoci:base" "$CORPUS" /corpus || return 0
  size_of "front umoci insert" "$1" "$(find "$WORK/fumoci/blobs" -type f -size +100k -printf '%s\n' | sort -n | tail -1)"
  rm -rf "$WORK/fumoci"
}
front_buildah() { # ROUND: buildah's commit of the tree as a gzip layer (its compression, its walk)
  rm -rf "$WORK/fbuildah" "$WORK/fbuildah.tar"
  measure front "front buildah bud" "$1" "${FRONT_BUILDAH[@]}" bud --layers --network none \
    --disable-compression=false -f "$WORK/Dockerfile.front" -t "oci-archive:$WORK/fbuildah.tar" "$WORK/fctx" || return 0
  size_of "front buildah bud" "$1" "$(tar -tvf "$WORK/fbuildah.tar" | awk '{print $3}' | sort -n | tail -1)"
  "${FRONT_BUILDAH[@]}" rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$WORK/fbuildah" "$WORK/fbuildah.tar"
}
front_kiln() { # ROUND COMPRESSION
  kiln_layer front "$2" "$1" "$CORPUS" "front kiln $2"
  rm -rf "$WORK/kroot"
}

front_round() { # ROUND
  local r=$1 slow=1 l
  [ "$r" -le "$FRONT_SLOW_ROUNDS" ] || slow=0
  front_kiln "$r" gzip; front_umoci "$r"
  front_buildah "$r"
  for l in 1 2 3 4 5 6 7 8 9; do
    front_kiln "$r" "gzip:$l"
    if [ "$l" -lt 9 ] || [ "$slow" = 1 ]; then front_pipe "$r" "front tar|pigz -$l -p2|sha256sum" "pigz -$l -p 2"; fi
  done
  [ "$slow" = 1 ] && front_pipe "$r" "front tar|gzip -6|sha256sum" "gzip -6"
  for l in $(seq 1 "$FRONT_MAX_ZSTD"); do
    [ "$l" -lt "$FRONT_SLOW_ZSTD" ] || [ "$slow" = 1 ] || continue
    front_kiln "$r" "zstd:$l"
    front_pipe "$r" "front tar|zstd -$l -T2|sha256sum" "zstd -q -$l -T2"
  done
}
