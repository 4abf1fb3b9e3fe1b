#!/usr/bin/env bash
# gen-man.sh - write kiln's man pages (one per command) with clap_mangen.
# Usage: scripts/gen-man.sh [OUTPUT-DIR]   (default: target/man); then `man -l target/man/kiln-build.1`.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/man}"
cargo run --quiet --locked --example manpages -- "$out"
ls "$out"
