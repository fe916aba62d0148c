#!/usr/bin/env bash
# The firmware image in QEMU, behind `make qemu`:
#   builds firmware-qemu (thumbv7em-none-eabihf) and the tether client,
#   writes a provisioning block (fresh seed from /dev/urandom, a fresh key
#   from `tether keygen`), boots mps2-an386 inside a new network namespace
#   with its LAN9118 on a TAP, waits for the first answer and runs the demo
#   with the real client: ping, exec, put/get of 1 MiB with SHA-256
#   compared and of 4 MiB, ls, time, echo. UART0 (the serial link) is on
#   a unix socket and UART1 (the log) in a file, which is shown.
#
# Needs root, /dev/net/tun and iproute2 (says which is missing); installs
# qemu-system-arm with apt-get when it is missing. Removes the namespace,
# the TAP and QEMU on exit and on Ctrl-C. QEMU_KEY=0 runs without a key.
set -euo pipefail
cd "$(dirname "$0")/.."

NS=${QEMU_NETNS:-tether-qemu-$$}
TAP=tap0
DEV_IP=192.168.69.2
HOST_IP=192.168.69.100
CARGO=${CARGO:-cargo}
TETHER=${CARGO_TARGET_DIR:-target}/release/tether
IMAGE=firmware-qemu/target/thumbv7em-none-eabihf/release/tether-firmware-qemu

say() { printf '== %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "not running as root (uid $(id -u)): a network namespace and a TAP interface need root"
[ -c /dev/net/tun ] || die "/dev/net/tun does not exist: this machine has no TUN/TAP support"
command -v ip >/dev/null 2>&1 || die "the 'ip' command (iproute2) is not installed"
if ! command -v qemu-system-arm >/dev/null 2>&1; then
    say "installing qemu-system-arm (apt-get)"
    apt-get update -qq && apt-get install -y -qq qemu-system-arm >/dev/null
fi

say "building the firmware image and the tether client (release)"
rustup target list --installed | grep -qx thumbv7em-none-eabihf || rustup target add thumbv7em-none-eabihf
(cd firmware-qemu && "$CARGO" build --release --quiet)
"$CARGO" build --release --quiet -p tether-host

QEMU_PID=""
TMP=$(mktemp -d)
cleanup() {
    set +e
    trap - EXIT INT TERM
    [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null
    if ip netns list | grep -qw "$NS"; then
        pids=$(ip netns pids "$NS")
        [ -n "$pids" ] && kill $pids 2>/dev/null
        for _ in $(seq 30); do
            [ -z "$(ip netns pids "$NS")" ] && break
            sleep 0.1
        done
        ip -n "$NS" link del "$TAP" 2>/dev/null
        ip netns del "$NS"
        say "removed network namespace $NS, $TAP and QEMU"
    fi
    [ -n "$QEMU_PID" ] && wait "$QEMU_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT TERM

unset TETHER_KEY
PROV_ARGS=(--ip "$DEV_IP/24")
if [ "${QEMU_KEY:-1}" != 0 ]; then
    "$TETHER" keygen "$TMP/device.key" >/dev/null
    export TETHER_KEY_FILE="$TMP/device.key"
    PROV_ARGS+=(--key-file "$TMP/device.key")
    say "pre-shared key: $TETHER_KEY_FILE (tether keygen), in the provisioning block and given to the client"
else
    unset TETHER_KEY_FILE
    say "no key (QEMU_KEY=0): the device serves anyone who reaches it"
fi
python3 scripts/qemu-prov.py "$TMP/prov.bin" "${PROV_ARGS[@]}"
say "provisioning block: $TMP/prov.bin (128 bytes at 0x3ff000: fresh seed, key, address, time)"

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" tuntap add dev "$TAP" mode tap
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up
# Linux re-sends an unanswered ARP request after 1 s; one sent while QEMU
# is still starting would dominate the boot figure.
ip netns exec "$NS" sh -c "echo 100 > /proc/sys/net/ipv4/neigh/$TAP/retrans_time_ms"
say "network namespace $NS: $TAP $HOST_IP/24, device $DEV_IP"

in_ns() { ip netns exec "$NS" "$@"; }
run() {
    printf '\n$ tether %s\n' "$*"
    in_ns "$TETHER" "$@"
}

START=$(date +%s%N)
# Its own session: a Ctrl-C at the terminal reaches the script, not QEMU.
in_ns setsid qemu-system-arm -M mps2-an386 -nographic -no-reboot -monitor none \
    -kernel "$IMAGE" \
    -device loader,file="$TMP/prov.bin",addr=0x3ff000 \
    -serial unix:"$TMP/uart0.sock",server=on,wait=off \
    -serial file:"$TMP/uart1.log" \
    -nic tap,ifname="$TAP",script=no,downscript=no,model=lan9118 \
    >"$TMP/qemu.out" 2>&1 &
QEMU_PID=$!
up=""
for _ in $(seq 100); do
    if in_ns "$TETHER" -qq ping "$DEV_IP" -c 1 --timeout 100ms --retries 0 >/dev/null 2>&1; then
        up=1
        break
    fi
    kill -0 "$QEMU_PID" 2>/dev/null || { cat "$TMP/qemu.out" "$TMP/uart1.log" >&2; die "QEMU exited"; }
    sleep 0.05
done
[ -n "$up" ] || { cat "$TMP/uart1.log" >&2; die "the device never answered"; }
say "boot to first answer: $(( ($(date +%s%N) - START) / 1000000 )) ms (QEMU start included)"
printf '\n-- UART1 (the device log) --\n'
cat "$TMP/uart1.log"

if command -v ping >/dev/null 2>&1; then
    printf '\n$ ping -c 2 %s\n' "$DEV_IP"
    in_ns ping -c 2 -W 1 "$DEV_IP"
fi
run ping "$DEV_IP" -c 3 -i 100ms
run exec "$DEV_IP" -- help
run exec "$DEV_IP" -- uptime
run exec "$DEV_IP" -- mem
head -c $((1024 * 1024)) /dev/urandom >"$TMP/demo.bin"
t0=$(date +%s%N)
run put "$DEV_IP" "$TMP/demo.bin" demo.bin
t1=$(date +%s%N)
run get "$DEV_IP" demo.bin "$TMP/back.bin"
t2=$(date +%s%N)
sent=$(sha256sum <"$TMP/demo.bin" | cut -d' ' -f1)
back=$(sha256sum <"$TMP/back.bin" | cut -d' ' -f1)
printf '\nsha256 sent %s\nsha256 back %s\n' "$sent" "$back"
[ "$sent" = "$back" ] || die "FAILED: the file that came back differs"
awk -v p=$((t1 - t0)) -v g=$((t2 - t1)) 'BEGIN { printf "put 1 MiB: %.0f KiB/s, get 1 MiB: %.0f KiB/s (client process start included)\n", 1024e9/p, 1024e9/g }'
head -c $((4 * 1024 * 1024)) /dev/urandom >"$TMP/big.bin"
run put "$DEV_IP" "$TMP/big.bin" big.bin
run get "$DEV_IP" big.bin "$TMP/big.back"
cmp -s "$TMP/big.bin" "$TMP/big.back" || die "FAILED: the 4 MiB file that came back differs"
run exec "$DEV_IP" -- sha256 demo.bin
run ls "$DEV_IP"
run time "$DEV_IP"
run echo "$DEV_IP" "hello device"
run exec "$DEV_IP" -- stats
printf '\n-- UART1 (the device log) since --\n'
tail -n 5 "$TMP/uart1.log"
echo
say "demo passed over the LAN9118: ping, exec, put/get of 1 MiB (SHA-256 compared) and 4 MiB, ls, time and echo"
say "the UART0 link (raw tether frames) is driven by the test peer in tests/tests/qemu.rs (the client has no serial support yet)"
