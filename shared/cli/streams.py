"""``routewise streams upgrade``: the operator's step of an upgrade (``routewise.runtime.streams``)."""

from __future__ import annotations

import json

import typer

from routewise.cli.common import JsonOpt, NatsUrlOpt, app, console, run_async
from routewise.client.discovery import resolve_settings

streams_app = typer.Typer(help="Routewise's JetStream streams.", no_args_is_help=True)
app.add_typer(streams_app, name="streams")


@streams_app.command("upgrade")
def upgrade(nats_url: NatsUrlOpt = None, as_json: JsonOpt = False) -> None:
    """Bring the streams up to date and move the events an older release left on subjects without
    their org onto their org's (as the operator: the services' bus users may not read or purge a
    stream). Idempotent; nothing is lost before it runs, the services apply what it moves."""
    from routewise.client import RoutewiseClient
    from routewise.runtime.streams import ensure_streams

    settings = resolve_settings(nats_url)

    async def go() -> int:
        async with RoutewiseClient(settings) as rw:
            return await ensure_streams(rw.nc.jetstream(), settings)

    moved = run_async(go, as_json)
    if as_json:
        print(json.dumps({"moved": moved}))
    else:
        console.print(f"streams up to date; {moved} event(s) moved onto their org's subject")
