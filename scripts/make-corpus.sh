#!/usr/bin/env bash
# make-corpus.sh [DEST] - a realistic ≥1 GiB tree from what every machine of this kind has: a copy
# of the Rust toolchain's sysroot without share/doc/rust/html/core (~1 GiB in ~11.6k entries: a few
# huge shared objects and rlibs plus ~10k small HTML/JS files). Ownership normalised to 0:0.
# Reuses DEST when it is already there (delete it to rebuild).
set -euo pipefail
DEST=${1:-/tmp/kiln-corpus}
if [ -f "$DEST/.complete" ]; then echo "$DEST"; exit 0; fi
SRC=$(readlink -f "$(rustc --print sysroot)")
rm -rf "$DEST"; mkdir -p "$DEST/toolchain"
tar -C "$SRC" --exclude=./share/doc/rust/html/core -cf - . | tar -C "$DEST/toolchain" -xf -
chown -R 0:0 "$DEST" 2>/dev/null || true
touch "$DEST/.complete"
echo "$DEST"
