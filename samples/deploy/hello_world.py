"""The controllers of the config-file deployment (hello.ini and world.ini).

``test_hello.hello`` answers its caller and asks ``test_world.world`` for a
greeting (the answer comes back to ``world_resp``) and publishes a notification
that ``test_world`` subscribes to. ``test_world.world`` answers with a greeting.
"""

from __future__ import annotations

import logging

from tavrida2 import dispatcher, service

log = logging.getLogger("samples.hello_world")


@dispatcher.rpc_service("test_hello")
class HelloController(service.ServiceController):
    @dispatcher.rpc_method(service="test_hello", method="hello")
    def hello(self, request, proxy, param):
        log.info("hello(param=%r) from %s", param, request.source)
        proxy.test_world.world(param=param).call()  # the answer goes to world_resp
        proxy.publish(param=param)  # a notification for test_world.on_hello
        return {"hello": param}

    @dispatcher.rpc_response_method(service="test_world", method="world")
    def world_resp(self, response, proxy, greeting):
        log.info("test_world answered: %s", greeting)


@dispatcher.rpc_service("test_world")
class WorldController(service.ServiceController):
    @dispatcher.rpc_method(service="test_world", method="world")
    def world(self, request, proxy, param):
        return {"greeting": f"world says hello to {param}"}

    @dispatcher.subscription_method(service="test_hello", method="hello")
    def on_hello(self, notification, proxy, param):
        log.info("notification from test_hello: param=%r", param)
