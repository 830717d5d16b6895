#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672; start it if it is installed but stopped.
set -u
HOST=${RABBITMQ_HOST:-127.0.0.1}
PORT=${RABBITMQ_PORT:-5672}

answers() {
    python3 - "$HOST" "$PORT" <<'PY'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        sys.exit(0 if s.recv(8) else 1)
except OSError:
    sys.exit(1)
PY
}

if answers; then
    echo "RabbitMQ answers on $HOST:$PORT"
    exit 0
fi
if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "RabbitMQ does not answer on $HOST:$PORT and rabbitmq-server is not installed." >&2
    echo "Install it (Debian: apt-get install rabbitmq-server) or start a broker there." >&2
    exit 1
fi
echo "RabbitMQ does not answer on $HOST:$PORT: starting it (rabbitmq-server -detached)"
rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 90); do
    if answers && rabbitmqctl -q await_startup >/dev/null 2>&1; then
        echo "RabbitMQ is up on $HOST:$PORT"
        exit 0
    fi
    sleep 1
done
echo "RabbitMQ did not come up on $HOST:$PORT within 90 s; see /var/log/rabbitmq/" >&2
exit 1
