# shellcheck shell=bash
# transfer.sh - the transfer section: moving an image, kiln against skopeo and umoci, on the corpus
# image (one ~280 MB gzip layer) and a local docker-registry (plain HTTP, access log on):
#   kiln pull (empty store)                  vs skopeo copy docker:// oci: (new layout)   ≤ 0.6×
#   the base unpack of a RUN step: kiln build `FROM corpus; RUN true` (rootless, a store holding
#     only the base)                          vs umoci unpack --rootless (same user)      ≤ 0.5×
#   kiln copy STORE docker-archive:F         vs skopeo copy oci:L docker-archive:F        ≤ 0.5×
#   kiln copy STORE oci-archive:F            vs skopeo copy oci:L oci-archive:F           ≤ 0.5×
#   fan-in: pull of a 5-layer image into a store holding the 4-layer image that shares its first
#     four layers: blob bytes the registry served (its access log) = the missing layer's size.
#     transfer.tsv rows: fanin TOOL ROUND BLOB_BYTES_SERVED MISSING_LAYER_BYTES

xfer_registry() { # a docker-registry with its access log on: XFER_PORT, log in $WORK/xreg/log
  XFER_PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  mkdir -p "$WORK/xreg/data"
  cat > "$WORK/xreg/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $WORK/xreg/data
http:
  addr: 127.0.0.1:$XFER_PORT
YML
  docker-registry serve "$WORK/xreg/config.yml" > "$WORK/xreg/log" 2>&1 &
  XFER_REG_PID=$!
  for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$XFER_PORT/v2/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "transfer: the registry did not start" >&2; exit 1
}
XK=("$KILN" --root "$WORK/xstore" --progress quiet --tls-verify=false)
blob_bytes_served() { # LOG-OFFSET: bytes of 200 responses to GET …/blobs/… in the access log since then
  tail -c +"$(( $1 + 1 ))" "$WORK/xreg/log" | python3 -c '
import re, sys
n = 0
for line in sys.stdin:
    m = re.search(r"\"GET /v2/\S+/blobs/sha256:[0-9a-f]+ HTTP/[0-9.]+\" 200 ([0-9]+)", line)
    if m:
        n += int(m.group(1))
print(n)'
}

transfer_setup() {
  log "transfer: registry, corpus image, layout, 4- and 5-layer images"
  user_setup
  xfer_registry
  # The corpus image: in kiln's store (copy's source), as an OCI layout (skopeo's), in the registry.
  "${XK[@]}" import "$CORPUS" -t corpus -o "oci:$WORK/xlayout:latest" >/dev/null
  "${XK[@]}" push corpus "127.0.0.1:$XFER_PORT/bench/corpus:latest" >/dev/null
  # The RUN base: the corpus with busybox on top (run.sh's big base), as the user's OCI layout
  # (umoci's input) and oci-archive (kiln's), both from one kiln import.
  mkdir -p "$WORK/u/xbb/bin" "$WORK/u/xctx"
  cp "$(command -v busybox)" "$WORK/u/xbb/bin/busybox"; ln -sf busybox "$WORK/u/xbb/bin/sh"; ln -sf busybox "$WORK/u/xbb/bin/true"
  tar -cf "$WORK/u/xbase.tar" -C "$CORPUS" . -C "$WORK/u/xbb" . && chmod 644 "$WORK/u/xbase.tar"
  "${XK[@]}" import "$WORK/u/xbase.tar" -t xbase -o "oci-archive:$WORK/u/xbase.oci.tar" >/dev/null
  "${XK[@]}" copy xbase "oci:$WORK/u/xbase-layout:latest" >/dev/null
  rm -f "$WORK/u/xbase.tar"
  printf 'FROM localhost/xbase\nRUN true\n' > "$WORK/u/Dockerfile.unpack"
  [ "$(id -u)" -eq 0 ] && chown -R "$RUNUSER:" "$WORK/u"
  # Fan-in: five layers of 16 MiB of random bytes each (incompressible: blob size = layer size).
  local i
  mkdir -p "$WORK/fan"
  for i in 1 2 3 4 5; do mkdir -p "$WORK/fan/l$i"; head -c $((16 << 20)) /dev/urandom > "$WORK/fan/l$i/data"; done
  { echo 'FROM scratch'; for i in 1 2 3 4; do echo "COPY l$i /l$i/"; done; } > "$WORK/fan/Dockerfile.four"
  { cat "$WORK/fan/Dockerfile.four"; echo "COPY l5 /l5/"; } > "$WORK/fan/Dockerfile.five"
  for i in four five; do
    "${XK[@]}" build "$WORK/fan" -f "$WORK/fan/Dockerfile.$i" -t "$i" >/dev/null
    "${XK[@]}" push "$i" "127.0.0.1:$XFER_PORT/bench/$i:latest" >/dev/null
    "${XK[@]}" inspect "$i" > "$WORK/fan/$i.json"
  done
  # The blob bytes a pull of five needs once four is present: its layers that four lacks.
  FAN_MISSING=$(python3 - "$WORK/fan/four.json" "$WORK/fan/five.json" <<'PY'
import json, sys
def layers(p):
    j = json.load(open(p))
    m = j.get("manifest", j)
    return {l["digest"]: l["size"] for l in m["layers"]}
four, five = layers(sys.argv[1]), layers(sys.argv[2])
print(sum(s for d, s in five.items() if d not in four))
PY
)
  : > "$OUT/transfer.tsv"
}

kiln_pull() { # ROUND
  rm -rf "$WORK/xpull"
  measure transfer "kiln pull" "$1" "$KILN" --root "$WORK/xpull" --progress quiet --tls-verify=false \
    pull "127.0.0.1:$XFER_PORT/bench/corpus:latest" || true
  rm -rf "$WORK/xpull"
}
skopeo_pull() { # ROUND
  rm -rf "$WORK/xsk"
  measure transfer "skopeo copy docker:// oci:" "$1" skopeo copy --quiet --src-tls-verify=false \
    "docker://127.0.0.1:$XFER_PORT/bench/corpus:latest" "oci:$WORK/xsk:latest" || true
  rm -rf "$WORK/xsk"
}
kiln_unpack() { # ROUND: a store with only the base, then one RUN on it (unpack + run + an empty layer)
  rm -rf "$WORK/u/xk"
  as_user "$WORK/u/kiln" --root "$WORK/u/xk" --progress quiet copy "oci-archive:$WORK/u/xbase.oci.tar" localhost/xbase >/dev/null
  measure transfer "kiln RUN base unpack" "$1" "${AS_USER[@]}" "$WORK/u/kiln" --root "$WORK/u/xk" --progress quiet \
    build "$WORK/u/xctx" -f "$WORK/u/Dockerfile.unpack" -t unpacked --no-cache --network none || true
  rm -rf "$WORK/u/xk"
}
umoci_unpack() { # ROUND
  rm -rf "$WORK/u/bundle"
  measure transfer "umoci unpack --rootless" "$1" "${AS_USER[@]}" umoci unpack --rootless \
    --image "$WORK/u/xbase-layout:latest" "$WORK/u/bundle" || true
  rm -rf "$WORK/u/bundle"
}
kiln_copy() { # docker|oci ROUND
  rm -f "$WORK/xout.tar"
  measure transfer "kiln copy $1-archive" "$2" "${XK[@]}" copy corpus "$1-archive:$WORK/xout.tar" || true
  size_of "kiln copy $1-archive" "$2" "$(stat -c %s "$WORK/xout.tar" 2>/dev/null || echo 0)"
  rm -f "$WORK/xout.tar"
}
skopeo_archive() { # docker|oci ROUND
  local ref=; [ "$1" = docker ] && ref=:localhost/corpus:latest
  rm -f "$WORK/xout.tar"
  measure transfer "skopeo copy $1-archive" "$2" skopeo copy --quiet "oci:$WORK/xlayout:latest" "$1-archive:$WORK/xout.tar$ref" || true
  size_of "skopeo copy $1-archive" "$2" "$(stat -c %s "$WORK/xout.tar" 2>/dev/null || echo 0)"
  rm -f "$WORK/xout.tar"
}
fanin() { # ROUND: kiln pull and skopeo copy of five onto four, bytes served counted
  local off
  rm -rf "$WORK/xfan"
  "$KILN" --root "$WORK/xfan" --progress quiet --tls-verify=false pull "127.0.0.1:$XFER_PORT/bench/four:latest" >/dev/null
  off=$(stat -c %s "$WORK/xreg/log")
  measure transfer "kiln pull 5 layers, 4 present" "$1" "$KILN" --root "$WORK/xfan" --progress quiet --tls-verify=false \
    pull "127.0.0.1:$XFER_PORT/bench/five:latest" || true
  sleep 0.2   # the registry writes its access log line after the response
  printf 'fanin\tkiln\t%s\t%s\t%s\n' "$1" "$(blob_bytes_served "$off")" "$FAN_MISSING" >> "$OUT/transfer.tsv"
  rm -rf "$WORK/xfan"
  skopeo copy --quiet --src-tls-verify=false "docker://127.0.0.1:$XFER_PORT/bench/four:latest" "oci:$WORK/xfan:four"
  off=$(stat -c %s "$WORK/xreg/log")
  measure transfer "skopeo copy 5 layers, 4 present" "$1" skopeo copy --quiet --src-tls-verify=false \
    "docker://127.0.0.1:$XFER_PORT/bench/five:latest" "oci:$WORK/xfan:five" || true
  sleep 0.2
  printf 'fanin\tskopeo\t%s\t%s\t%s\n' "$1" "$(blob_bytes_served "$off")" "$FAN_MISSING" >> "$OUT/transfer.tsv"
  rm -rf "$WORK/xfan"
}

transfer_round() { # ROUND
  kiln_pull "$1"; skopeo_pull "$1"
  kiln_unpack "$1"; umoci_unpack "$1"
  kiln_copy docker "$1"; skopeo_archive docker "$1"
  kiln_copy oci "$1"; skopeo_archive oci "$1"
  fanin "$1"
}
