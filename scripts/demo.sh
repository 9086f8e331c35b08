#!/usr/bin/env bash
# postern demo: a server whose every port is closed, opened for one client by one packet.
#
# Builds postern, creates three network namespaces (a server, a client, and a stranger),
# starts posternd protecting a small TCP service on the server, and walks through:
# closed to everyone -> a knock from the client -> open for the client only -> closed
# again when the grant expires. Everything it creates is removed at the end.
#   ./scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
pause() { sleep "${DEMO_PAUSE:-1}"; }

source scripts/deps.sh

bold "Building postern and posternd"
cargo build --quiet --locked -p postern -p posternd
BIN="$PWD/target/debug"

tag="pd$$"
SRV="${tag}srv" CLI="${tag}cli" OTHER="${tag}oth"
work=$(mktemp -d /tmp/postern-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for ns in "$SRV" "$CLI" "$OTHER"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

bold "1. Three hosts, each in its own network namespace"
ip netns add "$SRV"; ip netns add "$CLI"; ip netns add "$OTHER"
ip link add "${tag}a" type veth peer name "${tag}b"
ip link set "${tag}a" netns "$SRV"; ip link set "${tag}b" netns "$CLI"
ip link add "${tag}c" type veth peer name "${tag}d"
ip link set "${tag}c" netns "$SRV"; ip link set "${tag}d" netns "$OTHER"
ip -n "$SRV" addr add 198.18.99.1/24 dev "${tag}a"
ip -n "$CLI" addr add 198.18.99.2/24 dev "${tag}b"
ip -n "$SRV" addr add 198.18.98.1/24 dev "${tag}c"
ip -n "$OTHER" addr add 198.18.98.2/24 dev "${tag}d"
for ns in "$SRV" "$CLI" "$OTHER"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set "${tag}a" up; ip -n "$SRV" link set "${tag}c" up
ip -n "$CLI" link set "${tag}b" up; ip -n "$OTHER" link set "${tag}d" up
say "server 198.18.99.1 (and 198.18.98.1)   client 198.18.99.2   stranger 198.18.98.2"

bold "2. A service on the server: a small web server on tcp/8022"
mkdir -p "$work/www"; echo "Hello from behind the postern." > "$work/www/index.html"
ip netns exec "$SRV" python3 -m http.server --bind 0.0.0.0 --directory "$work/www" 8022 >/dev/null 2>&1 &
pids+=($!)

bold "3. Keys: postern keygen makes a Rijndael key and an HMAC key"
"$BIN/postern" keygen > "$work/keys"
KEY=$(sed -n 's/^KEY_BASE64: //p' "$work/keys"); HMAC=$(sed -n 's/^HMAC_KEY_BASE64: //p' "$work/keys")
say "KEY_BASE64: ${KEY:0:12}...   HMAC_KEY_BASE64: ${HMAC:0:12}..."

bold "4. posternd's configuration: fwknop's own file formats"
cat > "$work/fwknopd.conf" <<EOF
# posternd owns the input policy: drop everything, except what a knock opens.
NFT_DEFAULT_DROP     Y
FWKNOP_RUN_DIR       $work/run
DIGEST_FILE          $work/digest.cache
EOF
cat > "$work/access.conf" <<EOF
SOURCE               ANY
KEY_BASE64           $KEY
HMAC_KEY_BASE64      $HMAC
OPEN_PORTS           tcp/8022
FW_ACCESS_TIMEOUT    10
EOF
chmod 600 "$work/fwknopd.conf" "$work/access.conf"
sed 's/^/    | /' "$work/fwknopd.conf"; sed -e 's/\(BASE64 *\).\{12\}.*/\1.../' -e 's/^/    | /' "$work/access.conf"
ip netns exec "$SRV" "$BIN/posternd" -f -c "$work/fwknopd.conf" > "$work/posternd.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q "started" "$work/posternd.log" 2>/dev/null && break; sleep 0.1; done
sed 's/^/    log: /' "$work/posternd.log"

try() { # try NS ADDR: fetch the page, report
    if ip netns exec "$1" python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://$2:8022/', timeout=2).read().decode().strip())" 2>/dev/null | sed 's/^/    page: /'; then
        say "-> OPEN"
    else
        say "-> no answer: the port looks closed"
    fi
}

bold "5. Before the knock, the client tries the service"
try "$CLI" 198.18.99.1
pause

bold "6. The client knocks: one encrypted, authenticated UDP packet"
say "postern -A tcp/8022 -a 198.18.99.2 -D 198.18.99.1 --key-base64-rijndael ... --key-base64-hmac ..."
ip netns exec "$CLI" env HOME="$work" "$BIN/postern" --no-rc-file --no-save-args -A tcp/8022 -a 198.18.99.2 -D 198.18.99.1 \
    --key-base64-rijndael "$KEY" --key-base64-hmac "$HMAC" -B "$work/packet"
sleep 0.3
tail -n 1 "$work/posternd.log" | sed 's/^/    log: /'

bold "7. Now the client gets in"
try "$CLI" 198.18.99.1

bold "8. ...and only the client: the stranger still sees nothing"
try "$OTHER" 198.18.98.1

bold "9. posternd status: the open grant, with the seconds it has left"
ip netns exec "$SRV" "$BIN/posternd" status -r "$work/run" | sed 's/^/    /'
say "the grant is an element of an nftables set with its own timeout:"
ip netns exec "$SRV" nft list set inet postern allow4 | grep elements | sed 's/^\s*/    /'

bold "10. An eavesdropper replays the captured packet: refused"
ip netns exec "$OTHER" python3 -c "import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(open(sys.argv[1]).read().strip().encode(), ('198.18.98.1', 62201))" "$work/packet"
sleep 0.3
ip netns exec "$SRV" "$BIN/posternd" status -r "$work/run" | grep "refused by reason" | sed 's/^/    /'
{ grep "refused: replayed packet" "$work/posternd.log" || true; } | tail -n 1 | sed 's/^/    log: /'
say "(posternd remembers every packet it accepted, on disk, so a restart does not forget)"

bold "11. Waiting for the grant to expire (FW_ACCESS_TIMEOUT 10 s)..."
for _ in $(seq 12); do printf '.'; sleep 1; done; echo
{ grep "): closed " "$work/posternd.log" || true; } | tail -n 1 | sed 's/^/    log: /'
try "$CLI" 198.18.99.1

bold "Done. Cleaning up the namespaces and processes."
