"""``erpgw broker``: what an external NATS cluster needs to know of the gateway.

``erpgw broker authorization`` writes the ``authorization`` block a cluster node includes
(``deploy/nats/nats-server.conf``): one NKey user per gateway role, with the permissions the
embedded broker gives it, for the config's subject prefix. Missing role seeds are created in the
identities directory first (0700, seeds 0600); the block holds public keys only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["register"]


def cmd_authorization(args: argparse.Namespace) -> int:
    from contracts import Subjects

    from ..config import load_config
    from ..identities import (
        authorization_block,
        ensure_seeds,
        gateway_consumers,
        identities_dir,
        role_permissions,
    )

    overrides = {"data_dir": str(args.data_dir)} if args.data_dir is not None else None
    cfg = load_config(args.config, overrides=overrides)
    directory = identities_dir(cfg)
    keys = ensure_seeds(directory)
    subjects = Subjects(prefix=cfg.nats.prefix)
    block = ("# written by `erpgw broker authorization`: the gateway's broker identities "
             f"(prefix {cfg.nats.prefix!r});\n# their seeds are in {directory}\n"
             + authorization_block(keys, role_permissions(subjects,
                                                          gateway_consumers(subjects))))
    if args.out is None:
        sys.stdout.write(block)
        sys.stdout.flush()
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(block)
    os.chmod(tmp, 0o644)  # public keys only: the server's user may read it
    tmp.replace(args.out)
    print(f"wrote the authorization of {len(keys)} broker identities to {args.out} "
          f"(seeds in {directory})")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    bp = sub.add_parser(
        "broker", help="what an external NATS cluster needs: the gateway's broker identities",
        formatter_class=fmt,
        description="Helpers for running the gateways against a NATS cluster of your own "
                    "(deploy/nats/, docs/deploy.md) instead of the embedded broker.")

    def usage(_args: argparse.Namespace) -> int:
        bp.print_help()
        return 2

    bp.set_defaults(func=usage)
    bs = bp.add_subparsers(dest="broker_command", metavar="SUBCOMMAND")
    au = bs.add_parser(
        "authorization", help="write the NATS authorization block of the gateway's identities",
        formatter_class=fmt,
        description="Create the missing role seeds in the identities directory "
                    "(nats.identities_dir, else <data_dir>/identities; 0700, seeds 0600) and "
                    "write the nats-server 'authorization' block naming each role's public "
                    "key with its least-privilege permissions for the config's subject prefix "
                    "(docs/security.md). Include it in every node's config; copy the "
                    "identities directory to every gateway host.",
        epilog="example: erpgw broker authorization --config /etc/erpgw/erpgw.toml "
               "--out /etc/nats/erpgw-authorization.conf")
    au.add_argument("--config", type=Path, metavar="FILE", help="the gateway's TOML config")
    au.add_argument("--data-dir", type=Path, metavar="DIR",
                    help="the gateway's data directory (overrides data_dir)")
    au.add_argument("--out", type=Path, metavar="FILE",
                    help="write to FILE (mode 0644: public keys only) instead of standard "
                         "output")
    au.set_defaults(func=cmd_authorization)
