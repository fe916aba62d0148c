#!/usr/bin/env bash
# The simulated-device demo behind `make sim` (and `make sim-shell`).
#
#   scripts/sim.sh demo    build, start tether-sim on a TAP in a fresh network
#                          namespace, drive it with the real `tether` client
#   scripts/sim.sh shell   the same set-up, then `tether shell` against it
#
# Needs root and /dev/net/tun; without them it says why and runs the same
# demo over the in-process virtual wire (`tether-sim --virtual-demo`).
# The namespace and the TAP are removed on exit and on Ctrl-C.
# Extra tether-sim options (fault injection, --pcap FILE) go in SIM_ARGS.
# A fresh pre-shared key (`tether keygen`, in the temporary directory) is
# given to the device and the client through TETHER_KEY_FILE, so the demo
# runs authenticated and sealed; SIM_KEY=0 runs it without a key.
# The device also serves its read-only status page (--http, port 80), which
# the demo fetches with curl (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-demo}
NS=${SIM_NETNS:-tether-sim-$$}
TAP=tap0
DEV_IP=192.168.69.1
HOST_IP=192.168.69.100
PORT=7117
CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-target}/release
SIM=$TARGET/tether-sim
TETHER=$TARGET/tether
read -r -a SIM_EXTRA <<<"${SIM_ARGS:-}"

say() { printf '== %s\n' "$*"; }

why_not=""
if [ "$(id -u)" != 0 ]; then
    why_not="not running as root (uid $(id -u)): a network namespace and a TAP interface need root"
elif [ ! -c /dev/net/tun ]; then
    why_not="/dev/net/tun does not exist: this machine has no TUN/TAP support"
elif ! command -v ip >/dev/null 2>&1; then
    why_not="the 'ip' command (iproute2) is not installed"
fi

say "building tether-sim and tether (release)"
"$CARGO" build --release --quiet -p tether-sim -p tether-host

SIM_PID=""
TMP=$(mktemp -d)
cleanup() {
    set +e
    trap - EXIT INT TERM
    if ip netns list | grep -qw "$NS"; then
        # Stop what runs in the namespace (tether-sim; `ip netns exec` may
        # have forked, so its pid alone is not enough) before removing it.
        pids=$(ip netns pids "$NS")
        [ -n "$pids" ] && kill $pids 2>/dev/null
        for _ in $(seq 30); do
            [ -z "$(ip netns pids "$NS")" ] && break
            sleep 0.1
        done
        [ -n "$SIM_PID" ] && wait "$SIM_PID" 2>/dev/null
        ip -n "$NS" link del "$TAP" 2>/dev/null
        ip netns del "$NS"
        say "removed network namespace $NS and $TAP"
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT TERM

unset TETHER_KEY
if [ "${SIM_KEY:-1}" != 0 ]; then
    if ! "$TETHER" keygen "$TMP/sim.key" >/dev/null 2>"$TMP/err"; then
        cat "$TMP/err" >&2
        exit 1
    fi
    export TETHER_KEY_FILE="$TMP/sim.key"
    say "pre-shared key: $TETHER_KEY_FILE (tether keygen) for device and client; every frame sealed"
else
    unset TETHER_KEY_FILE
    say "no key (SIM_KEY=0): the device serves anyone who reaches it"
fi

if [ -n "$why_not" ]; then
    say "no TAP demo: $why_not"
    say "running the same demo over the in-process virtual wire instead"
    "$SIM" --virtual-demo "${SIM_EXTRA[@]}"
    exit
fi

say "network namespace $NS: $TAP with host side $HOST_IP/24, device $DEV_IP"
if ! ip netns add "$NS" 2>"$TMP/err"; then
    say "no TAP demo: cannot create a network namespace: $(cat "$TMP/err")"
    say "running the same demo over the in-process virtual wire instead"
    "$SIM" --virtual-demo "${SIM_EXTRA[@]}"
    exit
fi
ip -n "$NS" link set lo up
ip -n "$NS" tuntap add dev "$TAP" mode tap
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up

in_ns() { ip netns exec "$NS" "$@"; }
run() {
    printf '\n$ tether %s\n' "$*"
    in_ns "$TETHER" "$@"
}

say "starting $SIM --tap $TAP --ip $DEV_IP/24 --port $PORT --http ${SIM_EXTRA[*]}"
# Its own session: a Ctrl-C at the terminal goes to the client, not the device.
in_ns setsid "$SIM" --tap "$TAP" --ip "$DEV_IP/24" --port "$PORT" --http "${SIM_EXTRA[@]}" &
SIM_PID=$!
for _ in $(seq 50); do
    if in_ns "$TETHER" -qq ping "$DEV_IP" -c 1 --timeout 200ms --retries 0 >/dev/null 2>&1; then
        break
    fi
    kill -0 "$SIM_PID" 2>/dev/null || { say "tether-sim exited"; SIM_PID=""; exit 1; }
    sleep 0.1
done

say "status page: http://$DEV_IP/ and http://$DEV_IP/status.json (from namespace $NS)"

if [ "$MODE" = shell ]; then
    say "device running; 'help' lists its commands, 'exit' leaves (the device stops then)"
    in_ns "$TETHER" shell "$DEV_IP" || true
    exit 0
fi

if command -v ping >/dev/null 2>&1; then
    printf '\n$ ping -c 2 %s\n' "$DEV_IP"
    in_ns ping -c 2 -W 1 "$DEV_IP"
else
    printf '\n(ICMP echo not shown: the ping utility is not installed)\n'
fi
run ping "$DEV_IP" -c 3 -i 100ms
run exec "$DEV_IP" -- uptime
run exec "$DEV_IP" -- led on
run exec "$DEV_IP" -- mem
head -c $((1024 * 1024)) /dev/urandom >"$TMP/demo.bin"
run put "$DEV_IP" "$TMP/demo.bin" demo.bin
run get "$DEV_IP" demo.bin "$TMP/back.bin"
sent=$(sha256sum <"$TMP/demo.bin" | cut -d' ' -f1)
back=$(sha256sum <"$TMP/back.bin" | cut -d' ' -f1)
printf '\nsha256 sent %s\nsha256 back %s\n' "$sent" "$back"
if [ "$sent" != "$back" ]; then
    say "FAILED: the file that came back differs"
    exit 1
fi
run exec "$DEV_IP" -- sha256 demo.bin
run ls "$DEV_IP"
run time "$DEV_IP"
run echo "$DEV_IP" "hello device"
if ! command -v curl >/dev/null 2>&1; then
    say "installing curl (apt-get) for the status page"
    { apt-get install -y -qq curl || { apt-get update -qq && apt-get install -y -qq curl; }; } >/dev/null 2>&1 || true
fi
printf '\n$ curl -sS -i http://%s/status.json\n' "$DEV_IP"
in_ns curl -sS -i --fail --max-time 10 "http://$DEV_IP/status.json"
printf '\n$ curl -sS -o status.html -w ... http://%s/\n' "$DEV_IP"
in_ns curl -sS --fail --max-time 10 -o "$TMP/status.html" \
    -w '%{http_code} %{content_type}, %{size_download} bytes\n' "http://$DEV_IP/"
grep -o '<title>[^<]*' "$TMP/status.html" | sed 's/<title>/title: /'
run exec "$DEV_IP" -- stats
echo
say "demo passed: ping, exec, put/get of 1 MiB with matching SHA-256, time and echo over UDP, status page over HTTP"
