"""The graph as plain text: one section per kind of thing, one line per thing."""

from __future__ import annotations

from tavrida2.topology.model import METHOD, SystemGraph


def render_text(graph: SystemGraph) -> str:
    """Services, exchanges, queues, bindings, calls and subscriptions, one per line."""
    lines = ["services:"]
    width = max((len(name) for name in graph.services), default=0)
    for service in graph.services.values():
        where = f"queue {service.queue}" if service.queue else "no config given"
        notes = f", notifications {service.notifications}" if service.notifications else ""
        lines.append(
            f"  {service.name:<{width}}  exchange {service.exchange}, {where}{notes}"
            f"  ({service.source})"
        )
    lines.append("exchanges:")
    for exchange in graph.exchanges.values():
        durable = ", durable" if exchange.durable else ""
        alternate = f", alternate-exchange {exchange.alternate}" if exchange.alternate else ""
        lines.append(f"  {exchange.name} ({exchange.type}{durable}{alternate}): {exchange.kind}")
    lines.append("queues:")
    for queue in graph.queues.values():
        of = f" of {queue.of_queue}" if queue.of_queue else ""
        arguments = f" {dict(queue.arguments)}" if queue.arguments else ""
        durable = " (durable)" if queue.durable else ""
        lines.append(f"  {queue.name}{durable}: {queue.kind}{of}{arguments}")
    lines.append("bindings:")
    for binding in graph.bindings:
        lines.append(f"  {binding.exchange} --[{binding.routing_key}]--> {binding.queue}")
    for link in graph.exchange_bindings:
        lines.append(f"  {link.source} --[{link.routing_key}]--> exchange {link.destination}")
    for gone in graph.unbindings:
        lines.append(f"  removed: {gone.exchange} --[{gone.routing_key}]--> {gone.queue}")
    own = graph.queues_of(METHOD)
    if own:
        lines.append("methods with a queue of their own:")
        for queue in own:
            lines.append(f"  {queue.entry_point}: {queue.name}, prefetch {queue.prefetch}")
    lines.append("calls:")
    for call in graph.calls:
        target = f"{call.callee}.{call.method}"
        lines.append(f"  {call.caller} --{call.how}--> {target}  (known by {call.known_by})")
    lines.append("subscriptions:")
    for subscription in graph.subscriptions:
        lines.append(
            f"  {subscription.subscriber} <-- {subscription.publisher}.{subscription.method}"
        )
    return "\n".join(lines) + "\n"


__all__ = ["render_text"]
