"""Cluster: start (or join) Ray, start Serve's HTTP proxy, deploy the app, and take it all down again."""
from __future__ import annotations

import logging
import math
import os

from cyclediff.serve.config import EngineSpec, Limits, Scaling

LOOPBACK = "127.0.0.1"


class Cluster:
    """address None: an embedded local Ray whose node address is 127.0.0.1 (stopped with the command);
    'auto' or 'ray://HOST:PORT': an existing cluster (only this app is removed at the end)."""

    def __init__(self, address: str | None, num_cpus: int | None, object_store_mb: int, verbose: bool):
        self.address, self.num_cpus, self.object_store_mb, self.verbose = address, num_cpus, object_store_mb, verbose
        self.url = ""
        self._ray = None

    def start(self, scaling: Scaling, host: str, port: int) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a service's machines
        import ray
        from ray import serve

        self._ray = ray
        level = logging.INFO if self.verbose else logging.WARNING
        if self.address is None:
            ray.init(address="local", _node_ip_address=LOOPBACK, num_cpus=self._embedded_cpus(scaling),
                     object_store_memory=self.object_store_mb * 2**20, include_dashboard=False,
                     log_to_driver=self.verbose, logging_level=level)
        else:
            ray.init(address=self.address, log_to_driver=self.verbose, logging_level=level)
        serve.start(http_options={"host": host, "port": port},
                    logging_config={"log_level": "INFO" if self.verbose else "WARNING"})
        self.url = f"http://{host}:{port}"

    def _embedded_cpus(self, scaling: Scaling) -> int:
        """Enough logical CPUs for every replica: Ray would otherwise leave the extra replicas pending forever."""
        needed = math.ceil(scaling.num_cpus * scaling.most_replicas())
        return max(self.num_cpus or os.cpu_count() or 1, needed)

    def deploy(self, spec: EngineSpec, limits: Limits, scaling: Scaling) -> str:
        """Returns once every replica has loaded its Engine (a failing load raises, with the replica's error)."""
        from ray import serve

        from cyclediff.serve.deployment import APP_NAME, application

        serve.run(application(spec, limits, scaling), name=APP_NAME, route_prefix="/", blocking=False)
        return self.url

    def stop(self) -> None:
        if self._ray is None or not self._ray.is_initialized():
            return
        from ray import serve

        from cyclediff.serve.deployment import APP_NAME

        try:
            if self.address is None:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            self._ray.shutdown()
