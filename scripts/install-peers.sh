#!/usr/bin/env bash
# install-peers.sh - install the Debian packages kiln's tests and benchmarks run against, if missing.
# Idempotent; waits for a dpkg lock held by another apt run on the machine.
set -euo pipefail
pkgs=(skopeo umoci podman buildah runc docker-registry apache2-utils uidmap busybox-static debootstrap pigz zstd hyperfine time passt qemu-user-static binfmt-support)
# containerd and ctr: the archives kiln writes are imported and run by a containerd (tests/it/cli.rs).
pkgs+=(containerd)
# python3-cryptography: an independent ECDSA and DSSE verifier of kiln's signatures (tests/it/registry/sign.rs).
pkgs+=(python3-cryptography curl)
# RUN steps reach the network through pasta (package passt), which opens /dev/net/tun inside
# the step's user namespace: like Debian, Ubuntu and Fedora ship it, the device must be 0666
# (some container images and minimal hosts leave it 0600, usable by root only).
setup_tun() {
  local s=; [ "$(id -u)" -eq 0 ] || s=sudo
  if [ ! -c /dev/net/tun ]; then
    { $s mkdir -p /dev/net && $s mknod -m 0666 /dev/net/tun c 10 200; } || return 0
  fi
  [ "$(stat -c %a /dev/net/tun)" = 666 ] || $s chmod 0666 /dev/net/tun || true
}
# RUN steps for a foreign platform (kiln build --platform linux/arm64 on amd64) run under QEMU user
# emulation, registered in binfmt_misc by qemu-user-static + binfmt-support. Mount binfmt_misc if
# absent, (re)register the handlers, and check qemu-aarch64 is there.
setup_binfmt() {
  local s=; [ "$(id -u)" -eq 0 ] || s=sudo
  [ -e /proc/sys/fs/binfmt_misc/register ] ||
    $s mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || return 0
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { command -v update-binfmts >/dev/null && $s update-binfmts --enable >/dev/null 2>&1; } || true
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || echo "install-peers: qemu-aarch64 is not registered in binfmt_misc" >&2
}
trap 'setup_tun; setup_binfmt' EXIT
# The SBOM and provenance validators tests/it/attest.rs runs (PyPI: spdx-tools' pyspdxtools,
# cyclonedx-python-lib's JSON validator, in-toto-attestation's SLSA v1 protobuf types), in a venv
# of their own at $KILN_VALIDATORS (default /var/tmp/kiln-validators).
validators=${KILN_VALIDATORS:-/var/tmp/kiln-validators}
if [ ! -x "$validators/bin/pyspdxtools" ] || ! "$validators/bin/python" -c 'import cyclonedx.validation.json, in_toto_attestation' 2>/dev/null; then
  echo "installing the SBOM/provenance validators into $validators" >&2
  python3 -m venv "$validators" &&
    "$validators/bin/pip" install -q spdx-tools 'cyclonedx-python-lib[json-validation]' in-toto-attestation ||
    echo "install-peers: could not install the SBOM/provenance validators (pip)" >&2
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
wait_for_dpkg() {
  for _ in $(seq 1 120); do
    fuser /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock >/dev/null 2>&1 || return 0
    sleep 2
  done
}
echo "installing: ${missing[*]}" >&2
for attempt in 1 2; do
  wait_for_dpkg
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    exit 0
  fi
  echo "apt-get failed (attempt $attempt), retrying" >&2
  sleep 5
done
exit 1
