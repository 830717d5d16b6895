#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine: t2c1, t2c2, t2c3 @localhost on AMQP ports
# 5701-5703 (distribution 25701-25703), files under $T2_RABBIT_BASE/cluster
# (/tmp/tavrida2-rabbit-nodes/cluster); t2c2 and t2c3 join t2c1. The shared broker
# (rabbit@localhost, 5672) is not touched. See tests/brokers/rabbit_node.py.
#
#   scripts/rabbit-cluster.sh start [--ports 5701,5702,5703]
#   scripts/rabbit-cluster.sh status
#   scripts/rabbit-cluster.sh stop [--clean]       (--clean: remove data and logs)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m tests.brokers.rabbit_node cluster "$@"
