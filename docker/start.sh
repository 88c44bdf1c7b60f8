#!/bin/sh
# The containers' entry point: what an operator would type, from environment variables.
#
#   eranos-start localnet       the local chain on 0.0.0.0:8899
#   eranos-start coordinator    a key in /keys (made once), SOL from the local chain's faucet when
#                               AIRDROP_SOL is set, the run created on chain if it is not yet, then
#                               the coordinator (status and metrics on :8080)
#   eranos-start node           a key in /data (made once), SOL when AIRDROP_SOL is set, then a
#                               node of the coordinator at COORDINATOR_HOST, whose key it reads
#                               from /keys
#   eranos-start healthy ROLE   exit 0 once the role's service answers (the health check)
set -eu
CONFIG=${CONFIG:-/etc/eranos/configs/quickstart.toml}
KEYS=${KEYS:-/keys}

fund() {
    [ -z "${AIRDROP_SOL:-}" ] || eranos airdrop "$AIRDROP_SOL" --keypair "$1"
}

case "$1" in
localnet)
    exec eranos localnet --host 0.0.0.0 --port "${LOCALNET_PORT:-8899}"
    ;;
coordinator)
    key=$KEYS/coordinator.json
    [ -f "$key" ] || eranos keygen -o "$key"
    fund "$key"
    eranos run show --config "$CONFIG" --keypair "$key" >/dev/null 2>&1 \
        || eranos run create --config "$CONFIG" --keypair "$key"
    exec eranos coordinator --config "$CONFIG" --keypair "$key" --journal /data/journal.jsonl \
        --http "0.0.0.0:${HTTP_PORT:-8080}" --no-live
    ;;
node)
    key=/data/node.json
    [ -f "$key" ] || eranos keygen -o "$key"
    fund "$key"
    host=$(python -c "import socket, sys; print(socket.gethostbyname(sys.argv[1]))" "${COORDINATOR_HOST:-coordinator}")
    peer=$(eranos keygen --peer-id "$KEYS/coordinator.json")
    export ERANOS_COORDINATOR="${ERANOS_COORDINATOR:-/ip4/$host/tcp/${COORDINATOR_PORT:-4001}/p2p/$peer}"
    exec eranos node run --keypair "$key" --workdir /data/work
    ;;
healthy)
    case "$2" in
    localnet) url="http://127.0.0.1:${LOCALNET_PORT:-8899}" body='{"jsonrpc":"2.0","id":1,"method":"getHealth"}' ;;
    coordinator) url="http://127.0.0.1:${HTTP_PORT:-8080}/status.json" body="" ;;
    esac
    exec python -c "
import sys, urllib.request
data = sys.argv[2].encode() or None
request = urllib.request.Request(sys.argv[1], data, {'Content-Type': 'application/json'})
urllib.request.urlopen(request, timeout=2).read()" "$url" "$body"
    ;;
*)
    echo "eranos-start: unknown role '$1' (localnet, coordinator, node, healthy ROLE)" >&2
    exit 2
    ;;
esac
