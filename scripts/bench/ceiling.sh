# shellcheck shell=bash
# ceiling.sh - the ceiling section: what this machine's hardware allows, on the same bytes kiln
# writes, so kiln's stages can be read against it:
#   kiln layer none (its SHA-256 stage) vs openssl dgst -sha256 (SHA-NI) on the same tar bytes,
#   within 5%; kiln none vs tar | cat (walk + tar ceiling); single-core gzip -6 and zstd -3 -T1
#   on a 256 MiB sample of the same tar (compression ceiling per core)

ceiling_setup() {
  log "ceiling: kiln's own tar stream + a sample"
  # The exact bytes kiln hashes: its own uncompressed layer blob (the tar stream).
  rm -rf "$WORK/kroot"
  "$KILN" --root "$WORK/kroot" --progress quiet layer "$CORPUS" --compression none --json > "$WORK/none.json"
  local hex; hex=$(json_field "$WORK/none.json" digest | cut -d: -f2)
  mv "$WORK/kroot/blobs/sha256/$hex" "$WORK/layer.tar"
  # A 256 MiB sample of it for the single-core compressors: 1 MiB out of every 4 (or all of it
  # when smaller), so it has the tar's mix of content.
  python3 - "$WORK/layer.tar" "$WORK/sample.tar" <<'PY'
import os, sys
src, dst = sys.argv[1], sys.argv[2]
n = os.path.getsize(src); step = 4 << 20 if n > (512 << 20) else 1 << 20
with open(src, "rb") as f, open(dst, "wb") as o:
    for off in range(0, n, step):
        f.seek(off); o.write(f.read(1 << 20))
PY
  echo "tar_bytes	$(stat -c %s "$WORK/layer.tar")" >> "$OUT/meta.tsv"
  echo "sample_bytes	$(stat -c %s "$WORK/sample.tar")" >> "$OUT/meta.tsv"
}

ceiling_round() { # ROUND
  kiln_layer ceiling none "$1"
  pipeline ceiling "openssl dgst -sha256" "$1" "openssl dgst -sha256 '$WORK/layer.tar'"
  pipeline ceiling "tar|cat" "$1" "tar -C '$CORPUS' -cf - . | cat > /dev/null"
  pipeline ceiling "gzip -6 (1 core, sample)" "$1" "gzip -6 < '$WORK/sample.tar' > '$WORK/pipe.out'"
  pipeline ceiling "zstd -3 -T1 (1 core, sample)" "$1" "zstd -q -3 -T1 < '$WORK/sample.tar' > '$WORK/pipe.out'"
}
