#!/bin/sh
# Renders assets/icons/idlegrid.svg into the hicolor PNG sizes beside it (committed, so a
# package build needs no SVG renderer). Needs rsvg-convert (Debian: librsvg2-bin).
set -eu
cd "$(dirname "$0")/../assets/icons"
for size in 16 24 32 48 64 128 256 512; do
    rsvg-convert -w "$size" -h "$size" idlegrid.svg -o "idlegrid-$size.png"
done
