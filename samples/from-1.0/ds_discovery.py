"""A custom discovery written for Tavrida 1.0, filled from a ``.ds`` file.

1.0's docs: "you can implement your own discovery class. The only demand is to
inherit it from AbstractDiscovery". A 1.0 discovery implements the protected
``_register_*`` hooks, which the public ``register_*`` methods call, and the
getters. It reads the ``.ds`` file with 1.0's ``dsfile`` module.
"""

from tavrida2 import discovery, dsfile, exceptions


class DSDiscovery(discovery.AbstractDiscovery):
    """Every service of a ``.ds`` file, as remote service and remote publisher."""

    def __init__(self, ds_filename):
        super(DSDiscovery, self).__init__()
        self._remote = {}
        self._remote_publishers = {}
        self._local_publishers = {}
        dsf = dsfile.DSFile(ds_filename)
        for name in dsf.services:
            entry = dsf[name]
            self.register_remote_service(entry.service_name, entry.service_exchange)
            if entry.notifications_exchange:
                self.register_remote_publisher(entry.service_name, entry.notifications_exchange)

    def _register_remote(self, service_name, exchange_name):
        self._remote[service_name] = exchange_name

    def _register_remote_publisher(self, service_name, exchange_name):
        self._remote_publishers[service_name] = exchange_name

    def _register_local_publisher(self, service_name, exchange_name):
        self._local_publishers[service_name] = exchange_name

    def _get(self, registry, service_name):
        if service_name not in registry:
            raise exceptions.UnableToDiscover(service=service_name)
        return registry[service_name]

    def get_remote(self, service_name):
        return self._get(self._remote, service_name)

    def get_remote_publisher(self, service_name):
        return self._get(self._remote_publishers, service_name)

    def get_local_publisher(self, service_name):
        return self._get(self._local_publishers, service_name)

    def get_all_exchanges(self):
        return {
            "remote": list(set(self._remote.values())),
            "remote_publisher": list(set(self._remote_publishers.values())),
            "local_publisher": list(set(self._local_publishers.values())),
        }
