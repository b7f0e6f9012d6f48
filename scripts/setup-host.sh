#!/usr/bin/env bash
# Host set-up for cosim on Debian 12 (bookworm): apt sources, packages, arm64 foreign architecture.
# Idempotent and quick when everything is present. Runs as root (or through sudo).
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

APT_PACKAGES=(
  # the host's C compiler: QEMU, the kernel's host tools, the cache model's library
  gcc libc6-dev
  # QEMU build
  libglib2.0-dev libpixman-1-dev libfdt-dev zlib1g-dev flex bison pkg-config ninja-build
  python3-venv xz-utils dpkg-dev
  # guest kernel, modules, initramfs
  bc libssl-dev libelf-dev kmod cpio rsync gcc-aarch64-linux-gnu libc6-dev-arm64-cross patch
  # device trees
  device-tree-compiler
)
# From bookworm-backports: meson >= 1.5 for QEMU 10, the 6.12 kernel source.
BPO_PACKAGES=(meson python3-pycotap linux-source-6.12)

BPO_LIST=/etc/apt/sources.list.d/cosim-bookworm-backports.sources

mirror_uri() {
  # The machine's own Debian mirror: the URIs line of the entry that serves plain "bookworm".
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    awk '
      /^URIs:/   { uri=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") found=1 }
      /^$/       { if (found && uri) { print uri; exit } uri=""; found=0 }
      END        { if (found && uri) print uri }' "$f"
  done | head -n1
}

have_all_packages() {
  dpkg-query -W -f='${Status}\n' "${APT_PACKAGES[@]}" "${BPO_PACKAGES[@]}" 2>/dev/null \
    | grep -vc "install ok installed" | grep -qx 0
}

if [ ! -e "$BPO_LIST" ]; then
  uri=$(mirror_uri)
  if [ -z "$uri" ]; then
    echo "setup-host: no Debian mirror for 'bookworm' found in /etc/apt/sources.list.d/*.sources" >&2
    exit 1
  fi
  echo "setup-host: adding bookworm-backports and deb-src entries from mirror $uri"
  $SUDO tee "$BPO_LIST" >/dev/null <<SRC
Types: deb deb-src
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  NEED_UPDATE=1
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
  NEED_UPDATE=1
fi

if [ -n "${NEED_UPDATE:-}" ] || ! have_all_packages; then
  $SUDO apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${APT_PACKAGES[@]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports "${BPO_PACKAGES[@]}"
fi
