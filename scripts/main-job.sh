#!/usr/bin/env bash
# main-job.sh - the main job, offline: build kiln, make a real base image from the busybox-static
# package's binary, and export it as an OCI archive and a docker-archive.
#   out/busybox.oci.tar     (skopeo, podman, `kiln copy` read it)
#   out/busybox.docker.tar  (docker load / podman load)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v busybox >/dev/null || scripts/install-peers.sh
cargo build --release --locked
KILN=target/release/kiln
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
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  -o oci-archive:out/busybox.oci.tar -o docker-archive:out/busybox.docker.tar:kiln.local/busybox:latest
$KILN inspect kiln.local/busybox:latest | head -n 12
ls -l out/busybox.oci.tar out/busybox.docker.tar
