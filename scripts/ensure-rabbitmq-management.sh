#!/usr/bin/env bash
# The dashboard reads queue depths from RabbitMQ's management HTTP API (port 15672):
# enable the rabbitmq_management plugin of the local broker when it is off. This
# does not restart the broker. Run after scripts/ensure-rabbitmq.sh.
set -u
HOST=${RABBITMQ_HOST:-127.0.0.1}
URL="http://$HOST:15672/api/overview"

answers() {
    python3 - "$URL" <<'PY'
import base64, sys, urllib.request
request = urllib.request.Request(
    sys.argv[1], headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
)
try:
    with urllib.request.urlopen(request, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
PY
}

if answers; then
    echo "RabbitMQ's management API answers on $HOST:15672"
    exit 0
fi
if ! command -v rabbitmq-plugins >/dev/null 2>&1; then
    echo "RabbitMQ's management API does not answer on $HOST:15672 and rabbitmq-plugins is" >&2
    echo "not installed here: enable the rabbitmq_management plugin of the broker." >&2
    exit 1
fi
echo "enabling the rabbitmq_management plugin"
rabbitmq-plugins enable rabbitmq_management >/dev/null || {
    echo "rabbitmq-plugins enable rabbitmq_management failed" >&2
    exit 1
}
for _ in $(seq 1 30); do
    if answers; then
        echo "RabbitMQ's management API answers on $HOST:15672"
        exit 0
    fi
    sleep 1
done
echo "RabbitMQ's management API did not answer on $HOST:15672 within 30 s" >&2
exit 1
