#!/usr/bin/env bash
# Installs what building and testing ira needs on a Debian machine; a second run does
# nothing that is already done. Needs root (apt) or the packages already present.
set -euo pipefail
need_apt=()
for pkg in musl-tools python3-venv curl file cpio qemu-system-x86 qemu-utils ovmf zstd genisoimage fdisk gdisk dosfstools mtools e2fsprogs kmod hyperfine; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust with rustup first" >&2
    exit 1
fi
rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
for c in rustfmt clippy; do
    rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done
