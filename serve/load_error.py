"""ReplicaLoadError: a replica's failed Engine.load, in one line that the command finds in Serve's status.

Serve reports a replica that cannot start as "Deploying application cyclediff failed: Failed to update the
deployments"; the reason sits at the end of a Ray traceback in the deployment's status message. The replica
raises the error as ReplicaLoadError on one line, so that the command can show that line alone."""
from __future__ import annotations

import re

MARK = "ReplicaLoadError: "  # how a traceback's last line starts, after the exception's module path
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ReplicaLoadError(RuntimeError):
    @classmethod
    def of(cls, folder: str, err: BaseException) -> ReplicaLoadError:
        return cls(f"a replica could not load the Engine from {folder}: {type(err).__name__}: {_one_line(err)}")


def summary(messages: list[str], fallback: str) -> str:
    """One line for a failed deployment: the replica's ReplicaLoadError when a status message holds one, else the
    last line of the first message (the exception a traceback ends with), else `fallback`."""
    texts = [_ANSI.sub("", m) for m in messages if m]
    for text in texts:
        found = [line.split(MARK, 1)[1].strip() for line in text.splitlines() if MARK in line]
        if found:
            return found[-1]
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return f"a replica failed to start: {lines[-1]} (--verbose shows the replicas' logs)"
    return fallback


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
