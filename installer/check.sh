#!/bin/bash
# Builds the Debian package and proves it on this machine (as root, on a machine that may be
# changed: it installs and removes the package, and creates and deletes the user idlegrid):
#   1. `cargo deb` builds target/debian/idlegrid_*.deb (a release build);
#   2. `dpkg -i` installs it; both installed binaries answer --version; the files are in place;
#   3. `systemd-analyze verify` passes on both unit files (skipped, and said, without it);
#   4. the supervisor unit's ExecStart, run by hand as the user idlegrid against
#      /var/lib/idlegrid, serves: /healthz answers and the token files are created;
#   5. `dpkg -r` removes it (no file of it left), `dpkg -P` purges its data and user.
# Usage: installer/check.sh [--no-build]   (--no-build: use the .deb already in target/debian)
# Needs: cargo-deb (`cargo install cargo-deb --locked`), curl, dpkg; root.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs the package)"

if [ "${1:-}" != --no-build ]; then
    step "cargo deb"
    start=$(date +%s)
    cargo deb
    echo "built in $(( $(date +%s) - start )) s"
fi
deb=$(ls -t target/debian/idlegrid_*.deb 2>/dev/null | head -1)
[ -n "$deb" ] || fail "no target/debian/idlegrid_*.deb"
echo "package: $deb ($(du -h "$deb" | cut -f1))"
dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
dpkg-deb --contents "$deb" | awk '{print $6}'

step "dpkg -i"
dpkg -i "$deb"
for bin in idlegrid idlegrid-supervisor; do
    out=$("/usr/bin/$bin" --version) || fail "$bin --version failed"
    echo "$bin --version: $out"
    case "$out" in "$bin "[0-9]*) ;; *) fail "unexpected --version from $bin: $out" ;; esac
done
for f in /usr/share/applications/idlegrid.desktop /etc/xdg/autostart/idlegrid.desktop \
    /usr/lib/systemd/system/idlegrid-supervisor.service /usr/lib/systemd/user/idlegrid.service \
    /usr/share/icons/hicolor/scalable/apps/idlegrid.svg; do
    [ -f "$f" ] || fail "missing $f"
done
for size in 16 24 32 48 64 128 256 512; do
    f=/usr/share/icons/hicolor/${size}x${size}/apps/idlegrid.png
    [ -f "$f" ] || fail "missing $f"
done
getent passwd idlegrid >/dev/null || fail "postinst made no user idlegrid"
[ "$(stat -c %U /var/lib/idlegrid)" = idlegrid ] || fail "/var/lib/idlegrid is not idlegrid's"
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate /usr/share/applications/idlegrid.desktop /etc/xdg/autostart/idlegrid.desktop
else
    echo "desktop-file-validate not installed (desktop-file-utils): .desktop files not validated"
fi

step "systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify --man=no /usr/lib/systemd/system/idlegrid-supervisor.service
    echo "system unit: ok"
    # A user manager needs a runtime dir of its own.
    runtime=$(mktemp -d)
    XDG_RUNTIME_DIR=$runtime systemd-analyze --user verify --man=no \
        /usr/lib/systemd/user/idlegrid.service
    rm -rf "$runtime"
    echo "user unit: ok"
else
    echo "systemd-analyze missing: unit files not verified"
fi

step "the supervisor unit's ExecStart, by hand as idlegrid"
exec_start=$(sed -n 's/^ExecStart=//p' /usr/lib/systemd/system/idlegrid-supervisor.service)
listen=$(sed -n 's/.*--listen \([^ ]*\).*/\1/p' <<<"$exec_start")
echo "ExecStart: $exec_start"
log=$(mktemp)
# The unit's environment: HOME is the data dir (its local operator token goes under it).
(cd /var/lib/idlegrid && exec runuser -u idlegrid -- env HOME=/var/lib/idlegrid $exec_start) \
    >"$log" 2>&1 &
pid=$!
ok=""
for _ in $(seq 1 100); do
    if curl -fsS "http://$listen/healthz" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
sleep 2
alive=""; kill -0 "$pid" 2>/dev/null && alive=1
kill -TERM "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
cat "$log"; rm -f "$log"
[ -n "$ok" ] || fail "/healthz did not answer on $listen"
[ -n "$alive" ] || fail "the supervisor did not keep running"
echo "/healthz answered on $listen; it ran for 2 s more"
for f in worker.token operator.token; do
    [ "$(stat -c %U "/var/lib/idlegrid/$f")" = idlegrid ] || fail "no /var/lib/idlegrid/$f of idlegrid's"
done
echo "data dir: $(ls /var/lib/idlegrid | tr '\n' ' ')"

step "dpkg -r, then dpkg -P"
# Conffiles (the autostart entry under /etc) stay until purge, as dpkg keeps them.
conffiles=$(dpkg-query -W -f='${Conffiles}\n' idlegrid | awk 'NF {print $1}')
files=$(dpkg -L idlegrid | while read -r f; do
    [ -f "$f" ] && ! grep -qxF "$f" <<<"$conffiles" && echo "$f"
done)
dpkg -r idlegrid
left=""
for f in $files; do [ -e "$f" ] && left="$left $f"; done
[ -z "$left" ] || fail "left after dpkg -r:$left"
echo "removed: no file of the package left (kept until purge: data dir, user, conffiles:" $conffiles")"
dpkg -P idlegrid
for f in $conffiles; do [ ! -e "$f" ] || fail "$f left after purge"; done
[ ! -e /var/lib/idlegrid ] || fail "/var/lib/idlegrid left after purge"
! getent passwd idlegrid >/dev/null || fail "user idlegrid left after purge"
echo "purged: data dir and user gone"
printf '\ninstaller/check.sh: all checks passed\n'
