# shellcheck shell=bash
# multiarch.sh - the multiarch section (issue #20): variants/Dockerfile.minimal for linux/amd64
# and linux/arm64 in one build, rootless (user.sh), the arm64 RUN steps under the QEMU user
# emulator registered in binfmt_misc (qemu-user-static, installed by install-peers.sh), on
# debootstrap Debian bases: amd64 natively (minimal.sh's tree), arm64 with
# `debootstrap --arch=arm64` (its second stage under the same emulator), both cached per machine
# beside the tests' trees. The bases go into both stores from the same tarballs: kiln imports
# each with --platform and joins them with `kiln index create`; buildah pulls kiln's import of
# each (an oci-archive) and joins them with `buildah manifest create`.
#   kiln build --platform linux/amd64,linux/arm64   vs
#   buildah bud --platform linux/amd64,linux/arm64 --manifest   (vfs, runc, --network host)
# Target ≤ 0.8× (emulation dominates both; what differs is each builder's own overhead).
#
# Dockerfile.minimal has no `FROM --platform=$BUILDPLATFORM` stage, so the measured Dockerfile is
# Dockerfile.minimal with one added (made here from the file, so it follows it): a `tools` stage
# on the build platform's base whose RUN prints a marker, its file copied into the image. The
# marker's count in each builder's output is recorded in meta.tsv (`multiarch_buildplatform_runs
# ROUND KILN BUILDAH`): built once for both platforms, it is printed once. No --no-cache (the
# shared stage is found in the cache by the second platform): every round starts from stores
# holding only the bases (kiln's copied from a pristine store, buildah's built images pruned).
# buildah 1.28 does not define BUILDPLATFORM for `FROM --platform=$BUILDPLATFORM` (it warns
# `missing "BUILDPLATFORM" build argument`), so it builds the stage for each target platform,
# the arm64 one under emulation: its count is 2. It is not given `--build-arg BUILDPLATFORM=…`:
# with it, buildah 1.28 resolved the arm64 target stage's `FROM ${BASE}` to the amd64 instance
# the tools stage had resolved (every arm64 step then a cache hit of the amd64 build: an amd64
# image listed as arm64), so its time would not be that of a two-platform build.

DEBIAN_ARM64=$DEBIAN-arm64   # the tests' cache (support/runas/debootstrap.rs foreign_rootfs_dir)
UMK=("$WORK/u/kiln" --root "$WORK/u/kmroot")
# shellcheck disable=SC2054  # the comma is --platform's list
MULTI_ARGS=(--platform linux/amd64,linux/arm64 --build-arg BASE=localhost/debian:bookworm-multi
  --build-arg VERSION=1.4.0 -f "$WORK/u/multiarch/Dockerfile")

multiarch_setup() { # both trees (debootstrapped once per machine), tarballs, bases in both stores
  log "multiarch: Debian bases for amd64 and arm64"
  user_setup
  [ -r /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
    echo "multiarch: qemu-aarch64 is not registered in binfmt_misc (install-peers.sh installs qemu-user-static binfmt-support)" >&2; exit 1; }
  debian_tree "$DEBIAN"
  debian_tree "$DEBIAN_ARM64" --arch=arm64
  mkdir -p "$WORK/u/multiarch"
  # shellcheck disable=SC2016  # the Dockerfile's own variables
  sed '/^FROM \${BASE}$/i\
FROM --platform=$BUILDPLATFORM ${BASE} AS tools\
ARG BUILDPLATFORM\
RUN printf "%s-%s\\n" tools-stage ran \&\& echo "built on $BUILDPLATFORM" > /built-on\
' variants/Dockerfile.minimal > "$WORK/u/multiarch/Dockerfile"
  printf 'COPY --from=tools /built-on /etc/built-on\n' >> "$WORK/u/multiarch/Dockerfile"
  grep -q 'AS tools' "$WORK/u/multiarch/Dockerfile" || { echo "multiarch: no FROM \${BASE} line in Dockerfile.minimal" >&2; exit 1; }
  [ "$(id -u)" -eq 0 ] && chown -R "$RUNUSER:" "$WORK/u/multiarch"
  local arch
  for arch in amd64 arm64; do
    local tree=$DEBIAN; [ "$arch" = amd64 ] || tree=$DEBIAN-$arch
    as_user "${UMK[@]}" --progress quiet import "$tree.tar" --platform "linux/$arch" -t "localhost/debian-$arch" \
      -o "oci-archive:$WORK/u/debian-$arch.tar" >/dev/null
    as_user "${UB[@]}" pull -q --arch "$arch" "oci-archive:$WORK/u/debian-$arch.tar" > "$WORK/u/id-$arch"
    as_user "${UB[@]}" tag "$(tail -1 "$WORK/u/id-$arch")" "localhost/debian-$arch"
  done
  as_user "${UMK[@]}" --progress quiet index create -t localhost/debian:bookworm-multi localhost/debian-amd64 localhost/debian-arm64 >/dev/null
  as_user "${UB[@]}" manifest create localhost/debian:bookworm-multi >/dev/null
  for arch in amd64 arm64; do
    as_user "${UB[@]}" manifest add localhost/debian:bookworm-multi "containers-storage:localhost/debian-$arch" >/dev/null
  done
  mv "$WORK/u/kmroot" "$WORK/u/kmroot.bases"
}
debian_tree() { # DIR [--arch=ARCH]: debootstrap --variant=minbase bookworm, once, and DIR.tar
  local dir=$1; shift
  if [ ! -x "$dir/usr/bin/apt-get" ]; then
    log "debootstrap --variant=minbase $* bookworm $dir (once per machine)"
    rm -rf "$dir.tmp"
    debootstrap --variant=minbase "$@" bookworm "$dir.tmp" "$(debian_mirror)" > "$WORK/debootstrap.log" 2>&1
    mv "$dir.tmp" "$dir"
  fi
  if [ ! -f "$dir.tar" ] || [ "$dir.tar" -ot "$dir" ]; then
    tar -C "$dir" --numeric-owner -cf "$dir.tar.tmp" . && chmod 644 "$dir.tar.tmp" && mv "$dir.tar.tmp" "$dir.tar"
  fi
}
tools_runs() { grep -c '^\(.* \)\?tools-stage-ran$' "$WORK/$1" || true; }   # out|err: marker lines
kiln_multiarch() { # ROUND
  rm -rf "$WORK/u/kmroot"; cp -a "$WORK/u/kmroot.bases" "$WORK/u/kmroot"
  measure multiarch "kiln build multiarch" "$1" "${AS_USER[@]}" "${UMK[@]}" --progress plain build "$WORK/u/multiarch" \
    "${MULTI_ARGS[@]}" -t localhost/sandbox-minimal-multi || return 0
  KILN_TOOLS=$(tools_runs err)
}
buildah_multiarch() { # ROUND  (host network: rootless slirp4netns cannot open /dev/net/tun here)
  measure multiarch "buildah bud multiarch" "$1" "${AS_USER[@]}" "${UB[@]}" bud --runtime runc --network host --layers \
    "${MULTI_ARGS[@]}" --manifest localhost/sandbox-minimal-multi "$WORK/u/multiarch" || return 0
  BUILDAH_TOOLS=$(tools_runs out)
  as_user "${UB[@]}" manifest rm localhost/sandbox-minimal-multi >/dev/null 2>&1 || true
  buildah_rmi localhost/sandbox-minimal-multi
}

multiarch_round() { # ROUND
  KILN_TOOLS=-; BUILDAH_TOOLS=-
  kiln_multiarch "$1"; buildah_multiarch "$1"
  printf 'multiarch_buildplatform_runs\t%s\t%s\t%s\n' "$1" "$KILN_TOOLS" "$BUILDAH_TOOLS" >> "$OUT/meta.tsv"
}
