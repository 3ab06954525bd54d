"""Cluster: start (or join) Ray, start Serve's HTTP proxy, deploy the app, and take it all down again."""
from __future__ import annotations

import logging
import math
import os

from cyclediff.serve import load_error
from cyclediff.serve.config import EngineSpec, Limits, Scaling

LOOPBACK = "127.0.0.1"
# Without --verbose, Ray's messages that a user cannot act on are not printed (os.environ, read when Ray starts):
QUIET_ENV = {"RAY_enable_output_error_log_if_still_retry": "0"}  # "ServeController.graceful_shutdown failed" at stop
# A new local cluster gets token authentication either way; stated, Ray does not warn that it chose it. Not set to
# join a cluster: there it would demand a token from a cluster that may run without one.
EMBEDDED_QUIET_ENV = {"RAY_AUTH_MODE": "token"}


class DeployError(RuntimeError):
    """The application did not start; the message is one line (a replica's load error where it has one)."""


class Cluster:
    """address None: an embedded local Ray whose node address is 127.0.0.1 (stopped with the command);
    'auto' or 'ray://HOST:PORT': an existing cluster (only this app is removed at the end)."""

    def __init__(self, address: str | None, num_cpus: int | None, object_store_mb: int, verbose: bool):
        self.address, self.num_cpus, self.object_store_mb, self.verbose = address, num_cpus, object_store_mb, verbose
        self.url = ""
        self._ray = None

    def start(self, scaling: Scaling, host: str, port: int) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a service's machines
        for name, value in self._quiet_env().items():
            os.environ.setdefault(name, value)  # a user's own setting wins
        import ray
        from ray import serve

        if not self.verbose:  # "Started Serve", and serve.run's "Connecting to existing Serve app" on a fresh start
            logging.getLogger("ray.serve").setLevel(logging.WARNING)
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

    def _quiet_env(self) -> dict[str, str]:
        if self.verbose:
            return {}
        return {**QUIET_ENV, **(EMBEDDED_QUIET_ENV if self.address is None else {})}

    def _embedded_cpus(self, scaling: Scaling) -> int:
        """Enough logical CPUs for every replica: Ray would otherwise leave the extra replicas pending forever."""
        needed = math.ceil(scaling.num_cpus * scaling.most_replicas())
        return max(self.num_cpus or os.cpu_count() or 1, needed)

    def deploy(self, spec: EngineSpec, limits: Limits, scaling: Scaling) -> str:
        """Returns once every replica has loaded its Engine (a failing load raises, with the replica's error)."""
        from ray import serve

        from cyclediff.serve.deployment import APP_NAME, application

        try:
            serve.run(application(spec, limits, scaling), name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as err:  # "Deploying application cyclediff failed": the reason is in Serve's status
            raise DeployError(load_error.summary(_deployment_messages(APP_NAME), str(err))) from None
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


def _deployment_messages(app: str) -> list[str]:
    """Serve's status message of each of the app's deployments (a failed replica's traceback), [] if unknown."""
    from ray import serve

    try:
        status = serve.status().applications[app]
    except Exception:  # noqa: BLE001 - a status that cannot be read leaves Serve's own error to show
        return []
    return [d.message for d in status.deployments.values()]
