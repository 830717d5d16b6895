#!/usr/bin/env bash
# An extra RabbitMQ node beside the shared broker: own name, ports, files and cookie
# under $T2_RABBIT_BASE (/tmp/tavrida2-rabbit-nodes); see tests/brokers/rabbit_node.py.
#
#   scripts/rabbit-node.sh start NAME --port 5680 [--ssl-port 5681 --ca CA --cert CERT --key KEY]
#   scripts/rabbit-node.sh status NAME
#   scripts/rabbit-node.sh stop NAME [--clean]     (--clean: remove its data and logs)
#   scripts/rabbit-node.sh kill NAME               (SIGKILL, as a crash)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m tests.brokers.rabbit_node node "$@"
