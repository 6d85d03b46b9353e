#!/usr/bin/env bash
# Installs the system packages idlegrid needs to build and test (Debian/Ubuntu, apt).
# Safe to run again: it installs only what is missing. Needs root or sudo for the install.
set -euo pipefail

packages=(
  build-essential pkg-config libx11-dev libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6 libx11-xcb1
  libegl1 libegl-mesa0 libgl1-mesa-dri xvfb xauth xdotool imagemagick x11-apps openbox dbus-daemon \
  chromium chromium-driver
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup.sh: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${packages[@]}"
