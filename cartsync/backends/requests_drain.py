"""requests sessions whose answers are timed from the last byte sent (sockets.py), for Zenodo's uploads."""
from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .sockets import draining_pools

POOLS = draining_pools({"http": HTTPConnectionPool, "https": HTTPSConnectionPool})


class DrainingAdapter(HTTPAdapter):
    """An HTTPAdapter whose pool managers (direct and through a proxy) make draining connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):      # a SOCKS manager's pools are its own
            manager.pool_classes_by_scheme = POOLS
        return manager


def mount_draining(session: requests.Session) -> None:
    for prefix in ("http://", "https://"):
        session.mount(prefix, DrainingAdapter())
