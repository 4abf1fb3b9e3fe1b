#!/usr/bin/env bash
# make-corpus.sh - the benchmark inputs, made from what every machine of this kind has. Each form
# prints the tree's path and reuses it when it is already complete (delete it to rebuild).
#
#   make-corpus.sh [DEST]                   a realistic ≥1 GiB tree: a copy of the Rust toolchain's
#                                           sysroot without share/doc/rust/html/core (~1 GiB in ~11.6k
#                                           entries: a few huge shared objects and rlibs plus ~10k small
#                                           HTML/JS files). Ownership normalised to 0:0. Default
#                                           /tmp/kiln-corpus.
#   make-corpus.sh --subset BYTES SRC DEST  every k-th file of SRC (sorted by path, files larger than
#                                           BYTES/4 skipped) hard-linked into DEST until BYTES are
#                                           reached: a smaller tree with the same mix of content
#   make-corpus.sh --repeat K SRC DEST      K full copies of SRC (real copies, not links, so a layer
#                                           reads every byte K times): the 4 GiB tree
#   make-corpus.sh --files N DEST           N small synthetic files (sizes 64 B-8 KiB, text-like
#                                           content of realistic compressibility) in directories of
#                                           100, for the file-count scaling
set -euo pipefail

done_or_clean() { # DEST: exit with its path if complete, else start it afresh
  if [ -f "$1/.complete" ]; then echo "$1"; exit 0; fi
  rm -rf "$1"; mkdir -p "$1"
}
finish() { chown -R 0:0 "$1" 2>/dev/null || true; touch "$1/.complete"; echo "$1"; }

case ${1:-} in
  --subset)
    [ $# -eq 4 ] || { echo "usage: $0 --subset BYTES SRC DEST" >&2; exit 2; }
    BYTES=$2; SRC=$3; DEST=$4
    done_or_clean "$DEST"
    # NUL-separated "size path" pairs, sorted by path; pick until the budget is spent.
    (cd "$SRC" && find . -type f ! -name .complete -printf '%s %p\0' | sort -z -k2) |
      python3 -c '
import os, sys
budget, src, dest = int(sys.argv[1]), sys.argv[2], sys.argv[3]
files = []
for rec in sys.stdin.buffer.read().split(b"\0"):
    if rec:
        size, path = rec.split(b" ", 1)
        if int(size) <= budget // 4:
            files.append((int(size), path))
# every k-th file, so the subset has the whole tree'"'"'s mix of big and small files; more passes if short
k = max(1, sum(s for s, _ in files) // budget)
total, taken = 0, set()
for offset in range(k):
    for i in range(offset, len(files), k):
        if total >= budget:
            break
        size, path = files[i]
        d = os.path.join(dest.encode(), os.path.dirname(path))
        os.makedirs(d, exist_ok=True)
        os.link(os.path.join(src.encode(), path), os.path.join(dest.encode(), path))
        total += size
' "$BYTES" "$SRC" "$DEST"
    finish "$DEST"
    ;;
  --repeat)
    [ $# -eq 4 ] || { echo "usage: $0 --repeat K SRC DEST" >&2; exit 2; }
    K=$2; SRC=$3; DEST=$4
    done_or_clean "$DEST"
    for i in $(seq 1 "$K"); do
      mkdir -p "$DEST/copy$i"
      tar -C "$SRC" --exclude=./.complete -cf - . | tar -C "$DEST/copy$i" -xf -
    done
    finish "$DEST"
    ;;
  --files)
    [ $# -eq 3 ] || { echo "usage: $0 --files N DEST" >&2; exit 2; }
    N=$2; DEST=$3
    done_or_clean "$DEST"
    python3 - "$N" "$DEST" <<'PY'
import os, random, sys
n, dest = int(sys.argv[1]), sys.argv[2]
rng = random.Random(8)  # fixed seed: the same tree on every machine
words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10)))).encode()
         for _ in range(4096)]
for i in range(n):
    d = os.path.join(dest, f"d{i // 100:04d}")
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    size = int(min(8192, max(64, rng.lognormvariate(7.0, 1.0))))  # median ~1.1 KiB
    parts, total = [], 0
    while total < size:
        w = words[rng.randrange(len(words))] if rng.random() < 0.98 else rng.randbytes(4)
        parts.append(w); total += len(w) + 1
    with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
        f.write(b" ".join(parts)[:size])
PY
    finish "$DEST"
    ;;
  --*) echo "usage: $0 [DEST] | --subset BYTES SRC DEST | --repeat K SRC DEST | --files N DEST" >&2; exit 2 ;;
  *)
    DEST=${1:-/tmp/kiln-corpus}
    done_or_clean "$DEST"
    SRC=$(readlink -f "$(rustc --print sysroot)")
    mkdir -p "$DEST/toolchain"
    tar -C "$SRC" --exclude=./share/doc/rust/html/core -cf - . | tar -C "$DEST/toolchain" -xf -
    finish "$DEST"
    ;;
esac
