#!/bin/sh
# Draws the tray icons (one per state) and the window icon with ImageMagick. The PNGs are
# committed under assets/ and embedded by src/gui/icons.rs; run this again after changing them.
# Uses /usr/bin/convert (a stand-in may sit earlier in PATH on some machines).
set -eu
cd "$(dirname "$0")/.."
C=/usr/bin/convert
out=assets/tray
mkdir -p "$out" assets/ui
# A coloured disc with a white mark, 64x64 (tray hosts scale it down).
disc() { # name colour mark-draw-args...
    name=$1 colour=$2
    shift 2
    $C -size 64x64 xc:none -fill "$colour" -stroke '#00000060' -strokewidth 2 \
        -draw 'circle 32,32 32,3' -stroke none -fill white "$@" \
        -define png:color-type=6 "PNG32:$out/$name.png"
}
# computing: green, a "play" triangle
disc computing '#2e9d4c' -draw 'polygon 24,18 24,46 47,32'
# waiting for idle: blue, an hourglass
disc waiting '#2f6fd0' -draw 'polygon 20,16 44,16 32,32' -draw 'polygon 20,48 44,48 32,32'
# paused, owner active: orange, pause bars
disc owner '#e08a1e' -draw 'rectangle 21,18 28,46' -draw 'rectangle 36,18 43,46'
# paused by the user (snoozed): purple, a crescent moon
disc user '#7b4cc2' -draw 'circle 30,32 30,14' -fill '#7b4cc2' -draw 'circle 38,27 38,12'
# paused for a condition (heat, battery, schedule, program, full screen): amber, "!"
disc condition '#c9a000' -draw 'rectangle 29,14 35,38' -draw 'circle 32,46 32,50'
# disconnected: grey, a cross
disc disconnected '#7a7a7a' -stroke white -strokewidth 7 -draw 'line 21,21 43,43' -draw 'line 43,21 21,43'
# The window icon: a grid of four cells, one lit.
$C -size 128x128 xc:none -fill '#1f2a44' -draw 'roundrectangle 4,4 123,123 24,24' \
    -fill '#3a4a70' -draw 'rectangle 22,22 59,59' -draw 'rectangle 68,68 105,105' \
    -draw 'rectangle 22,68 59,105' -fill '#2e9d4c' -draw 'rectangle 68,22 105,59' \
    "PNG32:assets/ui/idlegrid.png"
