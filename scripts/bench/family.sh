# shellcheck shell=bash
# family.sh - the family section: the four variants/Dockerfile* built cold (--no-cache), rootless
# (user.sh), kiln (overlay snapshotter) vs buildah bud (vfs, runc), both with RUN steps on the host
# network, through a package cache on 127.0.0.1 filled once before the first measured round, so the
# internet is out of the figures: scripts/bench/pkgcache.py on 127.0.0.1:PKG_PORT, a pull-through
# cache in apt-cacher-ng's URL form (Debian's apt-cacher-ng cannot bind its socket on this VM)
#   apt   the bench base's sources.list names http://127.0.0.1:PKG_PORT/deb.debian.org/debian
#   pip   a PEP 503 simple index of `pip download` of the variants' requirements under
#         /pypi/simple/; the base's /etc/pip.conf names it
#   npm   not needed: no variant runs `npm install`
# buildah runs with --format docker: in OCI format it ignores SHELL (bash) and runs the steps with
# /bin/sh. Both tools get the same inputs: the variant files unchanged, one base image (the debootstrap
# minbase with those two files, imported from one tarball into both stores), the same build args.
# The base also sets BASH_ENV=/etc/kiln-bench-timing.sh: every RUN step's bash (the variants'
# SHELL) sources it first, and it prints the command's own start and end ($EPOCHREALTIME) to the
# step's output, so a step's overhead = the build's time around the commands (family.tsv:
# VARIANT TOOL ROUND STEP GAP_BEFORE_S CMD_S, plus a `tail` row: last command's end to exit).
# kiln's own peak RSS (not its RUN steps': GNU time's peak is the largest process of the tree,
# here apt or pip) is sampled from /proc every 0.2 s: family.tsv rows `rss VARIANT kiln ROUND KIB`.
# Targets: full variant cold ≤ 0.6× buildah; kiln's peak RSS ≤ 128 MiB.

# FAMILY_VARIANTS="full minimal" measures only those (default: all four), FAMILY_ROUNDS=N only
# the first N rounds (a loaded 2-core machine takes ~30 min a round).
read -r -a FAMILY_VARIANTS <<< "${FAMILY_VARIANTS:-minimal python node full}"
FAMILY_ROUNDS=${FAMILY_ROUNDS:-99}
fam_file() { [ "$1" = full ] && echo Dockerfile || echo "Dockerfile.$1"; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# The cache's files are kept per machine (like the debootstrap base), so a later run (or the
# concurrency section) does not go to the internet again; delete the directory to refill it.
PKGCACHE=${PKGCACHE:-/var/tmp/kiln-bench-pkgcache}
family_cache() { # the package cache on 127.0.0.1:PKG_PORT (pkgcache.py; stopped by lib.sh's cleanup)
  PKG_PORT=$(free_port)
  local c=$PKGCACHE
  mkdir -p "$c/pypi/files" "$c/pypi/simple"
  # Wheels for the base's Python (bookworm: CPython 3.11, x86_64), as pip inside it would choose.
  cat variants/requirements-*.txt | sort -u > "$WORK/requirements.txt"
  if [ ! -f "$c/pypi/simple/index.html" ] || ! cmp -s "$WORK/requirements.txt" "$c/pypi/requirements.txt"; then
    python3 -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
      -d "$c/pypi/files" -r "$WORK/requirements.txt" >&2
  fi
  python3 - "$c/pypi" <<'PY'
import hashlib, html, os, re, sys
root = sys.argv[1]
by = {}
for f in sorted(os.listdir(f"{root}/files")):
    name = re.sub(r"[-_.]+", "-", f.split("-")[0]).lower()  # PEP 503 normalised project name
    by.setdefault(name, []).append(f)
links = []
for name, files in by.items():
    os.makedirs(f"{root}/simple/{name}", exist_ok=True)
    with open(f"{root}/simple/{name}/index.html", "w") as o:
        o.write("<!DOCTYPE html><html><body>\n")
        for f in files:
            h = hashlib.sha256(open(f"{root}/files/{f}", "rb").read()).hexdigest()
            o.write(f'<a href="../../files/{html.escape(f)}#sha256={h}">{html.escape(f)}</a><br>\n')
        o.write("</body></html>\n")
    links.append(f'<a href="{name}/">{name}</a><br>')
open(f"{root}/simple/index.html", "w").write("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
PY
  cp "$WORK/requirements.txt" "$c/pypi/requirements.txt"
  python3 scripts/bench/pkgcache.py "$PKG_PORT" "$c" > "$WORK/pkgcache.log" 2>&1 &
  PKG_PID=$!
  for _ in $(seq 1 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PKG_PORT/pypi/simple/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "family: the package cache did not start" >&2; cat "$WORK/pkgcache.log" >&2; exit 1
}

family_base() { # the debootstrap minbase pointed at the cache, with the timing hook, in both stores
  local b=$WORK/fbase
  debian_tree "$DEBIAN"   # multiarch.sh
  rm -rf "$b"; cp -al "$DEBIAN" "$b"   # hard links: replace files, never write through them
  rm -rf "$b/etc/apt/sources.list" "$b"/var/lib/apt/lists/*_* "$b/etc/pip.conf"
  echo "deb http://127.0.0.1:$PKG_PORT/deb.debian.org/debian bookworm main" > "$b/etc/apt/sources.list"
  printf '[global]\nindex-url = http://127.0.0.1:%s/pypi/simple/\ntrusted-host = 127.0.0.1\n' "$PKG_PORT" > "$b/etc/pip.conf"
  # Sourced by the RUN step's bash before its command (BASH_ENV), once: children do not inherit it.
  cat > "$b/etc/kiln-bench-timing.sh" <<'SH'
unset BASH_ENV
__kb_start=$EPOCHREALTIME
trap 'echo "KILN-BENCH-STEP $__kb_start $EPOCHREALTIME" >&2' EXIT
SH
  tar -C "$b" --numeric-owner -cf "$WORK/u/fbase.tar" . && chmod 644 "$WORK/u/fbase.tar"
  rm -rf "$b"
  as_user "${UK[@]}" import "$WORK/u/fbase.tar" -t localhost/debian:bookworm-cache --cmd bash \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env BASH_ENV=/etc/kiln-bench-timing.sh \
    -o "oci-archive:$WORK/u/fbase.oci.tar" >/dev/null
  as_user "${UB[@]}" tag "$(as_user "${UB[@]}" pull -q "oci-archive:$WORK/u/fbase.oci.tar" | tail -1)" localhost/debian:bookworm-cache
  rm -f "$WORK/u/fbase.tar"
}

family_setup() {
  log "family: package cache on 127.0.0.1, Debian base"
  user_setup
  family_cache
  family_base
  rm -rf "$WORK/u/variants"; cp -r variants "$WORK/u/variants"
  [ "$(id -u)" -eq 0 ] && chown -R "$RUNUSER:" "$WORK/u/variants"
  if want family; then : > "$OUT/family.tsv"; fi   # (concurrency.sh calls this set-up too)
  [ -f "$PKGCACHE/.filled" ] && return 0
  log "family: filling the cache (one unmeasured kiln build of every variant, from the internet)"
  local v
  for v in minimal python node full; do
    as_user "${UK[@]}" build "$WORK/u/variants" -f "$WORK/u/variants/$(fam_file "$v")" -t "fam-$v" \
      "${FAM_ARGS[@]}" --allow network.host --network host > "$WORK/fill-$v.log" 2>&1 ||
      { echo "family: filling the cache with $v failed" >&2; tail -20 "$WORK/fill-$v.log" >&2; exit 1; }
  done
  touch "$PKGCACHE/.filled"
  du -sh "$PKGCACHE" >&2
}
FAM_ARGS=(--build-arg BASE=localhost/debian:bookworm-cache --build-arg VERSION=1.0.0 --no-cache)

# fam_steps VARIANT TOOL ROUND START_EPOCH END_EPOCH: the KILN-BENCH-STEP lines of the run's output → family.tsv
fam_steps() {
  cat "$WORK/out" "$WORK/err" | python3 -c '
import re, sys
v, tool, rnd, t0, t1 = sys.argv[1:6]
t0, t1 = float(t0), float(t1)
steps = sorted({(float(a), float(b)) for a, b in re.findall(r"KILN-BENCH-STEP ([0-9.]+) ([0-9.]+)", sys.stdin.read())})
prev = t0
for i, (a, b) in enumerate(steps, 1):
    print(f"step\t{v}\t{tool}\t{rnd}\t{i}\t{a - prev:.3f}\t{b - a:.3f}")
    prev = b
print(f"tail\t{v}\t{tool}\t{rnd}\t{len(steps)}\t{t1 - prev:.3f}\t0")
' "$@" >> "$OUT/family.tsv"
}
# rss_sampler BINARY: the largest VmHWM of any process running BINARY, until killed → $WORK/rss
rss_sampler() {
  python3 - "$1" "$WORK/rss" <<'PY' &
import os, signal, sys, time
exe, out = sys.argv[1], sys.argv[2]
peak = 0
def done(*_):
    open(out, "w").write(f"{peak}\n"); sys.exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/exe") == exe:
                    for line in open(f"/proc/{p}/status"):
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
    time.sleep(0.2)
PY
  RSS_PID=$!
}
kiln_family() { # VARIANT ROUND
  local t0 t1 ok=0
  rss_sampler "$WORK/u/kiln"
  t0=$EPOCHREALTIME
  measure family "kiln family $1" "$2" "${AS_USER[@]}" "$WORK/u/kiln" --root "$WORK/u/kroot" --progress plain build \
    "$WORK/u/variants" -f "$WORK/u/variants/$(fam_file "$1")" -t "fam-$1" "${FAM_ARGS[@]}" \
    --allow network.host --network host || ok=1
  t1=$EPOCHREALTIME
  kill "$RSS_PID"; wait "$RSS_PID" 2>/dev/null || true
  mkdir -p "$OUT/logs"; cat "$WORK/out" "$WORK/err" > "$OUT/logs/family-kiln-$1-$2.log"
  [ "$ok" = 0 ] || return 0
  fam_steps "$1" kiln "$2" "$t0" "$t1"
  printf 'rss\t%s\tkiln\t%s\t%s\n' "$1" "$2" "$(cat "$WORK/rss")" >> "$OUT/family.tsv"
}
buildah_family() { # VARIANT ROUND
  local t0 t1
  t0=$EPOCHREALTIME
  measure family "buildah family $1" "$2" "${AS_USER[@]}" "${UB[@]}" bud --runtime runc --network host --layers --format docker \
    "${FAM_ARGS[@]}" -f "$WORK/u/variants/$(fam_file "$1")" -t "localhost/fam-$1" "$WORK/u/variants" || return 0
  t1=$EPOCHREALTIME
  mkdir -p "$OUT/logs"; cat "$WORK/out" "$WORK/err" > "$OUT/logs/family-buildah-$1-$2.log"
  fam_steps "$1" buildah "$2" "$t0" "$t1"
  buildah_rmi "localhost/fam-$1"
}

family_round() { # ROUND
  local v
  [ "$1" -le "$FAMILY_ROUNDS" ] || return 0
  for v in "${FAMILY_VARIANTS[@]}"; do kiln_family "$v" "$1"; buildah_family "$v" "$1"; done
}
