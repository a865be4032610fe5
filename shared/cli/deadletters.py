"""``routewise deadletters list|show|replay|purge``: the events a service could not apply, kept with why."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from routewise.cli.common import (
    JsonOpt,
    NatsUrlOpt,
    app,
    bus_only,
    console,
    emit,
    err_console,
    fail,
    run_async,
    table,
)
from routewise.client.deadletters import (
    HEADER_DELIVERIES,
    HEADER_STREAM_SEQ,
    DeadLetter,
    DeadLetterFilter,
    DeadLetters,
    ReplayOutcome,
    ReplayStatus,
)
from routewise.client.discovery import resolve_settings
from routewise.contracts.errors import RemoteError

deadletters_app = typer.Typer(
    help="Dead letters: events a service could not apply (invalid, failing for good, or out of retries), kept "
    "with why. List and read them, replay them once the cause is fixed, or purge them.",
    no_args_is_help=True,
)
app.add_typer(deadletters_app, name="deadletters")

SHOWN_PAYLOAD_BYTES = 64 * 1024
"""``show`` prints this much of a payload at most."""

T = TypeVar("T")

ServiceOpt = Annotated[str | None, typer.Option("--service", help="Only those this service wrote (e.g. selector).")]
SubjectOpt = Annotated[
    str | None, typer.Option("--subject", help="Only those of this original subject (NATS wildcards * and > allowed).")
]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", help="Only those of this reason (e.g. invalid_message, max_deliver_exceeded).")
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only those written since: a duration back from now (30m, 1h, 2d) or an ISO time (UTC "
        "unless it has an offset).",
    ),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", help="Only those written before: a duration ago or an ISO time.")
]
SeqsArg = Annotated[
    list[int] | None, typer.Argument(metavar="SEQ", help="Sequence numbers, as `deadletters list` shows them.")
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter the filters match.")]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str | None, option: str, as_json: bool, now: datetime) -> datetime | None:
    """``1h`` (that long before ``now``) or an ISO date-time (UTC unless it says otherwise)."""
    if value is None:
        return None
    if found := _DURATION.match(value):
        return now - timedelta(**{_UNITS[found.group(2)]: float(found.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise fail(
            f"{option} is a duration back from now (30m, 1h, 2d) or an ISO time such as 2026-12-01T08:00:00Z, "
            f"not {value!r}",
            as_json,
            "invalid_request",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_filter(
    as_json: bool,
    service: str | None,
    subject: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
) -> DeadLetterFilter:
    now = datetime.now(UTC)
    return DeadLetterFilter(
        service=service,
        subject=subject,
        reason=reason,
        since=parse_when(since, "--since", as_json, now),
        until=parse_when(until, "--until", as_json, now),
    )


def with_letters(nats_url: str | None, as_json: bool, work: Callable[[DeadLetters], Awaitable[T]]) -> T:
    """``work`` on this deployment's dead letters, with the bus found as every command finds it."""
    from routewise.client import RoutewiseClient

    bus_only("routewise deadletters", as_json)
    settings = resolve_settings(nats_url)

    async def go() -> T:
        async with RoutewiseClient(settings) as rw:
            return await work(DeadLetters(rw.nc, settings.subjects, timeout=settings.request_timeout))

    return run_async(go, as_json)


def row_view(letter: DeadLetter) -> dict[str, Any]:
    return {
        "seq": letter.seq,
        "time": letter.time.isoformat(),
        "service": letter.service,
        "subject": letter.original_subject,
        "reason": letter.reason,
        "error": letter.summary,
        "deliveries": _int(letter.headers.get(HEADER_DELIVERIES)),
        "size": letter.size,
    }


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@deadletters_app.command("list")
def list_(
    service: ServiceOpt = None,
    subject: SubjectOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="Show the latest N that match.")] = 50,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The dead letters (the latest --limit of those that match), oldest first."""
    where = build_filter(as_json, service, subject, reason, since, until)

    async def read(letters: DeadLetters) -> tuple[list[DeadLetter], int]:
        latest: deque[DeadLetter] = deque(maxlen=limit)  # however many there are, only these are kept
        matched = 0
        async for letter in letters.scan(where):
            latest.append(letter)
            matched += 1
        return list(latest), matched

    shown, matched = with_letters(nats_url, as_json, read)
    if as_json:
        print(json.dumps({"dead_letters": [row_view(d) for d in shown], "matched": matched}))
        return
    if not shown:
        err_console.print("no dead letters" + (" match" if where != DeadLetterFilter() else ""))
        return
    out = Table(title="Dead letters (UTC)", title_justify="left")
    rows = [
        [str(d.seq), f"{d.time:%Y-%m-%d %H:%M:%S}", d.service, d.original_subject, d.reason, d.summary] for d in shown
    ]
    for i, column in enumerate(("seq", "time")):  # what `show` and `replay` are given: never cut short
        out.add_column(column, no_wrap=True, min_width=max(len(row[i]) for row in rows))
    for column in ("service", "subject", "reason", "error"):  # folded in a narrow terminal
        out.add_column(column, overflow="fold")
    for cells in rows:  # cells are data: never read as rich markup
        out.add_row(*(escape(c) for c in cells))
    console.print(out)
    if matched > len(shown):
        console.print(f"the latest {len(shown)} of {matched} that match; --limit or the filters show others")


@deadletters_app.command("show")
def show(
    seq: Annotated[int, typer.Argument(metavar="SEQ", help="Its sequence number, as `deadletters list` shows it.")],
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One dead letter: why, every header, and the payload (pretty JSON when it is JSON)."""

    async def read(letters: DeadLetters) -> DeadLetter:
        return await letters.get(seq)

    letter = with_letters(nats_url, as_json, read)
    data = letter.data or b""
    cut = len(data) > SHOWN_PAYLOAD_BYTES
    text = data[:SHOWN_PAYLOAD_BYTES].decode("utf-8", errors="replace")
    payload: Any = text
    if not cut:
        with contextlib.suppress(ValueError):
            payload = json.loads(text)
    view = row_view(letter) | {
        "error": letter.error,
        "original_seq": _int(letter.headers.get(HEADER_STREAM_SEQ)),
        "event_id": letter.event_id,
        "msg_id": letter.msg_id,
        "dead_letter_subject": letter.subject,
    }
    if as_json:
        extra = {"headers": dict(letter.headers), "payload": payload, "payload_truncated": cut}
        print(json.dumps(view | extra, ensure_ascii=False))
        return
    emit(view, as_json, f"Dead letter {seq}")
    console.print(table("Headers", ["header", "value"], [[k, v] for k, v in sorted(letter.headers.items())]))
    console.print(f"[bold]payload[/] ({letter.size} bytes)")
    if isinstance(payload, str):
        console.print(payload, markup=False, highlight=False)
    else:
        console.print_json(json.dumps(payload, ensure_ascii=False))
    if cut:
        console.print(f"… {len(data) - SHOWN_PAYLOAD_BYTES} more bytes not shown")


async def _chosen(
    letters: DeadLetters, seqs: list[int], where: DeadLetterFilter, *, up_to: int | None = None
) -> AsyncIterator[int]:
    """The sequence numbers named, or those the filters match (read as they are needed)."""
    if seqs:
        for seq in seqs:
            yield seq
        return
    async for letter in letters.scan(where, up_to=up_to):
        yield letter.seq


def _which(seqs: list[int] | None, every: bool, filtered: bool, as_json: bool) -> list[int]:
    if seqs and (every or filtered):
        raise fail(
            "name dead letters by SEQ, or choose them with --all and filters; not both", as_json, "invalid_request"
        )
    if not seqs and not every:
        raise fail("which dead letters? name them by SEQ, or --all (with filters)", as_json, "invalid_request")
    return seqs or []


@deadletters_app.command("replay")
def replay(
    seqs: SeqsArg = None,
    every: AllOpt = False,
    service: ServiceOpt = None,
    subject: SubjectOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be replayed; publish nothing.")] = False,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish dead letters again to their original subject, once the cause is fixed.

    Each keeps its event id, so a consumer that applied it already does not apply it again; a dead
    letter is deleted once JetStream has acknowledged its replay. Exit 1 when some were not replayed.
    """
    where = build_filter(as_json, service, subject, reason, since, until)
    chosen = _which(seqs, every, where != DeadLetterFilter(), as_json)

    async def go(letters: DeadLetters) -> list[ReplayOutcome]:
        outcomes: list[ReplayOutcome] = []
        async for seq in _chosen(letters, chosen, where):
            try:
                letter = await letters.get(seq)
            except RemoteError as exc:
                outcome = ReplayOutcome(seq, ReplayStatus.skipped, "", exc.message)
            else:
                outcome = await letters.replay(letter, dry_run=dry_run)
            outcomes.append(outcome)
            if not as_json:
                _say(outcome)
        return outcomes

    outcomes = with_letters(nats_url, as_json, go)
    done = sum(o.status != ReplayStatus.skipped for o in outcomes)
    kept = len(outcomes) - done
    if as_json:
        key = "would_replay" if dry_run else "replayed"
        views = [
            {"seq": o.seq, "status": o.status.value, "subject": o.subject, "event_id": o.event_id, "detail": o.detail}
            for o in outcomes
        ]
        print(json.dumps({key: done, "skipped": kept, "dry_run": dry_run, "dead_letters": views}))
    elif not outcomes:
        err_console.print("no dead letters match")
    else:
        verb = "would replay" if dry_run else "replayed"
        console.print(f"{verb} {done} of {len(outcomes)}" + (f"; {kept} not replayed (kept)" if kept else ""))
    if kept:
        raise typer.Exit(1)


def _say(outcome: ReplayOutcome) -> None:
    if outcome.status == ReplayStatus.skipped:
        err_console.print(f"{outcome.seq}: not replayed: {outcome.detail}", markup=False, highlight=False)
        return
    verb = "would replay" if outcome.status == ReplayStatus.would_replay else "replayed"
    console.print(
        f"{outcome.seq}: {verb} to {outcome.subject} (event {outcome.event_id})", markup=False, highlight=False
    )


@deadletters_app.command("purge")
def purge(
    seqs: SeqsArg = None,
    every: AllOpt = False,
    service: ServiceOpt = None,
    subject: SubjectOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    nats_url: NatsUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete dead letters for good. Asks first (or refuses, when it cannot ask) without --yes."""
    where = build_filter(as_json, service, subject, reason, since, until)
    chosen = _which(seqs, every, where != DeadLetterFilter(), as_json)
    up_to: int | None = None
    if not yes:
        if as_json or not sys.stdin.isatty():
            raise fail("purging deletes dead letters for good: pass --yes", as_json, "invalid_request")

        async def count(letters: DeadLetters) -> tuple[int, int | None]:
            found, last = 0, None
            async for seq in _chosen(letters, chosen, where):
                found, last = found + 1, seq
            return found, last

        found, up_to = with_letters(nats_url, as_json, count)
        if not found:
            err_console.print("no dead letters match")
            return
        typer.confirm(f"Delete {found} dead letter{'s' if found != 1 else ''} for good?", abort=True)

    async def go(letters: DeadLetters) -> tuple[int, list[int]]:
        purged, missing = 0, []
        async for seq in _chosen(letters, chosen, where, up_to=up_to):  # no more than were confirmed
            if await letters.delete(seq):
                purged += 1
            else:
                missing.append(seq)
        return purged, missing

    purged, missing = with_letters(nats_url, as_json, go)
    if as_json:
        print(json.dumps({"purged": purged, "missing": missing}))
    else:
        console.print(f"purged {purged} dead letter{'s' if purged != 1 else ''}")
        if missing:
            err_console.print(f"no dead letter {', '.join(map(str, missing))}")
    if missing:
        raise typer.Exit(1)
