#!/usr/bin/env bash
# test.sh - the whole test suite on a fresh machine: installs the Debian peers the tests validate
# against (skopeo, umoci, podman, buildah, docker-registry, …), checks formatting and lints, and
# runs every test. With CI=true, a test whose peer tool is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# The module docs are the map (src/lib.rs): their links must resolve.
RUSTDOCFLAGS='-D warnings' cargo doc --locked --no-deps --lib
cargo test --locked --lib --bins --tests
