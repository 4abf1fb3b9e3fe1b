#!/usr/bin/env bash
# main-job.sh - the main job, offline: build kiln, make a base image from the busybox-static
# package's binary (`kiln import`), then `kiln build` the example in fixtures/example on it and
# export the result:
#   out/example.oci.tar     (skopeo, podman, `kiln copy` read it)
#   out/example.docker.tar  (docker load / podman load)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v busybox >/dev/null || scripts/install-peers.sh
cargo build --release --locked
KILN=${CARGO_TARGET_DIR:-$PWD/target}/release/kiln
export KILN_ROOT=${KILN_ROOT:-$PWD/out/store}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,var}
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list-full); do
  [ "$applet" = bin/busybox ] || ln -sf /bin/busybox "$rootfs/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
mkdir -p out
$KILN import "$rootfs" -t kiln.local/busybox:latest --cmd /bin/sh \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$KILN build fixtures/example -t kiln.local/example:latest --progress plain \
  --metadata-file out/example.metadata.json \
  -o oci-archive:out/example.oci.tar -o docker-archive:out/example.docker.tar:kiln.local/example:latest
$KILN inspect kiln.local/example:latest | head -n 12
ls -l out/example.oci.tar out/example.docker.tar
