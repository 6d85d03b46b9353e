#!/bin/sh
# Screenshots of the desktop client for the README: a private Xvfb with openbox, a local
# supervisor running examples/jobs/mandelbrot.toml, `idlegrid` connected to it, the status page
# and then the settings page captured with ImageMagick's `import`, each checked not to be blank.
#
#   cargo build --bins && scripts/screenshots.sh     # writes docs/screenshot-{status,settings}.png
#
# Needs: xvfb openbox imagemagick dbus-daemon (setup.sh installs them). Uses /usr/bin/ tools
# (a stand-in `convert` may sit earlier in PATH on some machines).
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-target/debug}
work=$(mktemp -d /tmp/idlegrid-shots.XXXXXX)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT INT TERM

# A display of its own (-displayfd picks a free number) and a window manager on it.
exec 3>"$work/display"
/usr/bin/Xvfb -displayfd 3 -noreset -nolisten tcp -screen 0 1100x800x24 >/dev/null 2>&1 &
pids="$pids $!"
for _ in $(seq 200); do [ -s "$work/display" ] && break; sleep 0.1; done
DISPLAY=":$(cat "$work/display")"
export DISPLAY
/usr/bin/openbox >/dev/null 2>&1 &
pids="$pids $!"

# A supervisor on a free port, and the Mandelbrot job.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOME="$work/home" "$BIN/idlegrid-supervisor" serve --listen "127.0.0.1:$port" --data-dir "$work/sup" >"$work/sup.log" 2>&1 &
pids="$pids $!"
for _ in $(seq 200); do [ -s "$work/sup/worker.token" ] && [ -s "$work/sup/operator.token" ] && break; sleep 0.1; done
submit() {
    HOME="$work/home" "$BIN/idlegrid-supervisor" submit examples/jobs/mandelbrot.toml \
        --server "http://127.0.0.1:$port" --token-file "$work/sup/operator.token" >/dev/null
}

shot() { # page output
    cat >"$work/settings.toml" <<TOML
idle_after_secs = 0.5
run_while_in_use = true
server = "ws://127.0.0.1:$port/worker"
token_file = "$work/sup/worker.token"
TOML
    dbus-run-session -- "$BIN/idlegrid" --config "$work/settings.toml" --data-dir "$work/client-$1" \
        --name screenshot --page "$1" >"$work/client-$1.log" 2>&1 &
    client=$!
    pids="$pids $client"
    sleep 2
    submit
    sleep "${SHOT_WAIT:-6}"
    wid=$(xdotool search --onlyvisible --name '^idlegrid$' | head -1)
    [ -n "$wid" ] || { echo "no idlegrid window on $DISPLAY; the client's log:" >&2; cat "$work/client-$1.log" >&2; exit 1; }
    /usr/bin/import -window root "$2"
    /usr/bin/import -window "$wid" "$work/window-$1.png"
    # dbus-run-session does not pass the signal on: end the client itself, then the session.
    for c in $(cat "/proc/$client/task/$client/children" 2>/dev/null); do kill "$c" 2>/dev/null || true; done
    wait "$client" 2>/dev/null || true
    # Not blank means the client's own window (not the desktop around it, not openbox's frame)
    # shows something: many colours, and no single colour over 97% of it (an empty or black
    # window is one colour with a few antialiased edges).
    colours=$(/usr/bin/convert "$work/window-$1.png" -format '%k' info:)
    pixels=$(/usr/bin/convert "$work/window-$1.png" -format '%[fx:w*h]' info:)
    top=$(/usr/bin/convert "$work/window-$1.png" -format %c histogram:info:- | sort -nr | head -1 | tr -d ' ' | cut -d: -f1)
    share=$((100 * top / pixels))
    if [ "$colours" -lt 16 ] || [ "$share" -gt 97 ]; then
        echo "$2 looks blank ($colours colours, the commonest on $share% of the window); the client's log:" >&2
        cat "$work/client-$1.log" >&2
        exit 1
    fi
    echo "$2: $colours colours in the window, the commonest on $share% of it"
}
shot status docs/screenshot-status.png
shot settings docs/screenshot-settings.png
