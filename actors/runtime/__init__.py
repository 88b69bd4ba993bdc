"""The actor runtime: actors, supervisors and the pure policies behind them.

Theory of operation
-------------------
Everything the gateway does runs as an ``Actor``: a long-lived ``run()`` coroutine that calls
``task_status.started()`` once it is really ready and returns after ``request_stop()`` once
its in-flight work is done. Actors are arranged in a tree of ``Supervisor`` s (a supervisor is
itself an actor). Each supervisor owns one anyio task group that holds all its children, so
no task outlives its supervisor.

A supervisor starts its children in order, each only after the previous one is ready, and
stops them in reverse order. When a child exits, its ``ChildSpec.restart`` type decides
(permanent: always restart, transient: only after a failure, temporary: never); the strategy
decides which siblings go with it (``one_for_one``: none, ``rest_for_one``: the ones started
after it). Restarts wait a jittered ``Backoff`` and are counted by a ``RestartIntensity``;
too many within the period and the supervisor stops everything and raises
``SupervisorEscalation`` to its own parent, which treats it as one failed child.

``RestartIntensity`` and ``Backoff`` are pure (time and randomness passed in), so the policy
is tested as tables; the supervisor is the thin I/O shell that applies it. ``statistics()``
and ``SupervisorEvent`` are what monitoring reads.
"""

from __future__ import annotations

from .actor import Actor
from .restart import Backoff, RestartIntensity
from .supervisor import (
    DEFAULT_BACKOFF,
    ChildSpec,
    ChildState,
    RestartType,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorEvent,
)

__all__ = [
    "DEFAULT_BACKOFF",
    "Actor",
    "Backoff",
    "ChildSpec",
    "ChildState",
    "RestartIntensity",
    "RestartType",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "SupervisorEvent",
]
