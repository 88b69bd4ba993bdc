"""One module per ``erpgw`` command. Each defines ``register(sub)`` that adds its parser and
sets ``func`` (``args -> exit code``). ``gateway.cli`` discovers the modules here, so adding a
command never touches the CLI core. ``ORDER`` fixes how ``erpgw --help`` lists them."""

from __future__ import annotations

ORDER = ("up", "sim", "demo", "bench", "monitor", "trace", "dlq", "replay", "reconcile",
         "close", "audit", "schema", "broker")
