"""The commands of deploy: containers: ``image build`` (the runtime image) and ``serve`` (one server
in the foreground, the command of a server container; see compose/)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.errors import UserError


def cmd_image_build(args: argparse.Namespace) -> int:
    from harness import dockerhost
    from harness.run import image

    client = dockerhost.connect()
    tag = image.ensure(client, print, base=args.base, force=args.force)
    info = image.describe(client, tag)
    print(f"{tag} (id {info['id'][7:19]}, {info['size_bytes'] / 1e6:.0f} MB)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from harness.run import services

    if args.service not in services.CONTAINER_PORTS:
        raise UserError(f"unknown service {args.service!r} (known: {', '.join(services.CONTAINER_PORTS)})")
    settings: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        settings[key] = value
    if args.advertise is not None and args.service != "kafka":
        raise UserError(f"--advertise is for kafka (its listener published on the host), not {args.service}")
    services.serve(args.service, args.durability, settings, Path(args.data_dir), args.advertise)
    return 0  # not reached: serve replaces this process with the server


def register(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("image", help="the runtime image of deploy: containers")
    image_sub = p.add_subparsers(dest="image_command", required=True, parser_class=parser_class)
    p = image_sub.add_parser("build", help="build the runtime image (cached by content: a no-op when built)")
    p.add_argument("--base", help="base image, e.g. debian:bookworm-slim (default: a debootstrap base made here)")
    p.add_argument("--force", action="store_true", help="build even if an image of this content exists")
    p.set_defaults(func=cmd_image_build)
    p = sub.add_parser("serve", help="inside a container: run one server in the foreground")
    p.add_argument("service", help="postgres | redis | temporal | restate | temporal-server | kafka")
    p.add_argument("--durability", default="strict", choices=["strict", "relaxed", "volatile"])
    p.add_argument("--data-dir", default="/data", help="data directory (default /data)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a server setting over the profile's")
    p.add_argument("--advertise", metavar="127.0.0.1:PORT",
                   help="kafka: the host's address of its port 19092 (published there), advertised to the host's "
                        "clients")
    p.set_defaults(func=cmd_serve)
