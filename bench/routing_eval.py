"""Routing quality of the learning strategy on real outcomes (../shared/data/routing-eval).

All five services run as processes with a two-model catalog: GPT-4 (gpt-4-1106-preview) and
Mixtral 8x7B. Half of each benchmark's decontaminated rows are learnt the way a deployment
learns: each is submitted as a task, the application reports both models' calls (CostRecorded)
and whether each answer was right (FeedbackRecorded). The other half is scored from the
preview's per-candidate predicted quality (``routing.decide``, nothing reserved), the strong
model's advantage being its quality minus the weak one's, as RouteLLM scores routers: APGR
and CPT(50%)/CPT(80%). The scores before any learning (the prior alone) and a random router
are given for comparison, and what the learning strategy actually chooses at the default
quality bias is priced against always calling GPT-4.

    uv run --frozen python -m bench.routing_eval [--limit N] [--data DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import tempfile
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats

from bench.common import environment, publish_all, write_results
from routewise.client import RoutewiseClient
from routewise.contracts.events import CostRecorded, FeedbackRecorded, ModelSelected, Scope, TaskArrived, TaskRejected
from routewise.contracts.routing import RoutingPolicy, RoutingPreview, SetPolicy
from routewise.contracts.subjects import SERVICES, durable, subject_matches
from routewise.runtime.settings import Settings

STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
MODELS = {STRONG: ("gpt-4-1106-preview", "openai"), WEAK: ("mixtral-8x7b", "groq")}
"""Dataset model → (catalog id, provider)."""
CATALOG = """
[[models]]
id = "gpt-4-1106-preview"
provider = "openai"
tier = "heavy"
quality_prior = 0.81
context_window = 128000

[[models]]
id = "mixtral-8x7b"
provider = "groq"
tier = "standard"
quality_prior = 0.68
context_window = 32768
price_ref = "mixtral-8x7b-32768"
"""
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing-eval"
FILES = {"gsm8k": "gsm8k.jsonl", "mmlu": "mmlu_public.jsonl"}
SCOPE = Scope(org_id="routing-eval")


def load(folder: Path, benchmark: str, limit: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The decontaminated rows, shuffled with a fixed seed and split in halves: (learn, score)."""
    with (folder / FILES[benchmark]).open() as fh:
        rows = [r for r in map(json.loads, fh) if not r["contaminated"]]
    random.Random(0).shuffle(rows)
    if limit:
        rows = rows[:limit]
    half = len(rows) // 2
    return rows[:half], rows[half:]


# ------------------------------------------------------------------ RouteLLM's scoring


def curve(rows: Sequence[dict[str, Any]], scores: Sequence[float]) -> list[tuple[float, float]]:
    """(share of strong calls, quality) at the 11 decile thresholds of the scores."""
    ordered = sorted(scores)
    n = len(rows)
    points = []
    for i in range(11):
        edge = ordered[min(int(i * n / 10), n - 1)]
        strong = [(s > edge) if i == 10 else (s >= edge) for s in scores]
        quality = sum(r["outcomes"][STRONG if st else WEAK]["correct"] for st, r in zip(strong, rows, strict=True))
        points.append((sum(strong) / n, quality / n))
    return sorted(points)


def accuracy(rows: Sequence[dict[str, Any]], model: str) -> float:
    return sum(r["outcomes"][model]["correct"] for r in rows) / len(rows)


def apgr(rows: Sequence[dict[str, Any]], scores: Sequence[float]) -> float:
    points = curve(rows, scores)
    auc = sum((x2 - x1) * (y1 + y2) / 2 for (x1, y1), (x2, y2) in itertools.pairwise(points))
    weak, strong = accuracy(rows, WEAK), accuracy(rows, STRONG)
    return (auc - weak) / (strong - weak)


def cpt(rows: Sequence[dict[str, Any]], scores: Sequence[float], gain: float) -> float | None:
    """Share of strong calls needed to reach weak + gain * (strong - weak), interpolated."""
    weak, strong = accuracy(rows, WEAK), accuracy(rows, STRONG)
    target = weak + gain * (strong - weak)
    points = curve(rows, scores)
    for (x1, y1), (x2, y2) in itertools.pairwise(points):
        if y1 < target <= y2:
            return x1 + (x2 - x1) * (target - y1) / (y2 - y1)
        if y1 >= target:
            return x1
    return None


def report(rows: Sequence[dict[str, Any]], scores: Sequence[float]) -> dict[str, float | None]:
    c50, c80 = cpt(rows, scores, 0.5), cpt(rows, scores, 0.8)
    return {
        "apgr": round(apgr(rows, scores), 4),
        "cpt50": None if c50 is None else round(c50, 4),
        "cpt80": None if c80 is None else round(c80, 4),
    }


# ------------------------------------------------------------------ through the bus


def task_of(row: dict[str, Any], benchmark: str, **fields: Any) -> TaskArrived:
    return TaskArrived(scope=SCOPE, task_type=benchmark, prompt=row["prompt"], policy="eval", **fields)


async def drained(settings: Settings, service: str, subject: str, timeout: float = 600) -> None:
    """Wait until ``service``'s durable consumer of ``subject`` has nothing pending."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        stream = settings.subjects.stream_for(subject).name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = await js.consumer_info(stream, durable(service, subject))
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{service} did not drain {subject} within {timeout}s")
    finally:
        await nc.close()


async def learn(settings: Settings, benchmark: str, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Submit the rows as tasks, then report both models' calls, then both answers' quality."""
    tasks = [task_of(r, benchmark) for r in rows]
    wanted = {str(t.task_id) for t in tasks}
    decided: dict[str, str] = {}
    all_decided = asyncio.Event()
    nc = await nats.connect(settings.nats_url)
    try:

        async def on_decision(msg: Any) -> None:
            task_id = json.loads(msg.data)["task_id"]
            if task_id in wanted:
                decided[task_id] = msg.subject
                if len(decided) == len(wanted):
                    all_decided.set()

        subs = [
            await nc.subscribe(s, cb=on_decision)
            for s in (settings.subjects.of(ModelSelected), settings.subjects.of(TaskRejected))
        ]
        js = nc.jetstream()
        await publish_all(js, settings.subjects, list(tasks), in_flight=200)
        await asyncio.wait_for(all_decided.wait(), timeout=600)
        for sub in subs:
            await sub.unsubscribe()
        costs, feedback = [], []
        for task, row in zip(tasks, rows, strict=True):
            for name, (model, provider) in MODELS.items():
                tokens = row["tokens"][name]
                costs.append(
                    CostRecorded(
                        task_id=task.task_id,
                        scope=SCOPE,
                        task_type=benchmark,
                        model=model,
                        provider=provider,
                        input_tokens=tokens["input"],
                        output_tokens=tokens["output"],
                        cost_usd=Decimal(str(row["cost_usd"][name])).quantize(Decimal("1e-12")),
                    )
                )
                feedback.append(
                    FeedbackRecorded(
                        task_id=task.task_id,
                        scope=SCOPE,
                        task_type=benchmark,
                        model=model,
                        quality=float(row["outcomes"][name]["correct"]),
                    )
                )
        await publish_all(js, settings.subjects, list(costs), in_flight=200)
        await drained(settings, "performance_tracker", settings.subjects.of(CostRecorded))
        await publish_all(js, settings.subjects, list(feedback), in_flight=200)
        await drained(settings, "performance_tracker", settings.subjects.of(FeedbackRecorded))
        await drained(settings, "selector", settings.subjects.of(FeedbackRecorded))
    finally:
        await nc.close()
    selected = sum(1 for s in decided.values() if subject_matches(settings.subjects.of(ModelSelected), s))
    return {"tasks": len(tasks), "selected": selected, "rejected": len(decided) - selected, "feedback": len(feedback)}


async def previews(
    rw: RoutewiseClient, benchmark: str, rows: list[dict[str, Any]], concurrency: int = 8
) -> list[RoutingPreview]:
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> RoutingPreview:
        async with gate:
            return await rw.request(
                rw.subjects.routing_decide, task_of(row, benchmark, strategy="learning"), RoutingPreview
            )

    return list(await asyncio.gather(*(one(r) for r in rows)))


def advantage(preview: RoutingPreview) -> float:
    """The strong model's predicted quality minus the weak one's."""
    chosen = preview.selected
    if chosen is None:
        raise RuntimeError(f"preview rejected the task: {preview.rejected}")
    quality = {c.model: c.predicted_quality for c in chosen.candidates}
    return quality[MODELS[STRONG][0]] - quality[MODELS[WEAK][0]]


def choices(rows: list[dict[str, Any]], shown: list[RoutingPreview]) -> dict[str, float]:
    """What the learning strategy picks at the default quality bias: accuracy and cost vs GPT-4 alone."""
    by_id = {v[0]: k for k, v in MODELS.items()}
    picked = [by_id[p.selected.model] for p in shown if p.selected]
    cost = sum(r["cost_usd"][m] for r, m in zip(rows, picked, strict=True))
    all_strong = sum(r["cost_usd"][STRONG] for r in rows)
    return {
        "strong_share": round(sum(m == STRONG for m in picked) / len(picked), 4),
        "accuracy": round(sum(r["outcomes"][m]["correct"] for r, m in zip(rows, picked, strict=True)) / len(rows), 4),
        "accuracy_all_strong": round(accuracy(rows, STRONG), 4),
        "accuracy_all_weak": round(accuracy(rows, WEAK), 4),
        "cost_vs_all_strong": round(cost / all_strong, 4),
    }


async def evaluate(settings: Settings, benchmark: str, folder: Path, limit: int | None) -> dict[str, Any]:
    """One benchmark on its own fresh stack: nothing learnt from another benchmark leaks in."""
    async with RoutewiseClient(settings) as rw:
        await rw.request(
            rw.subjects.routing_policies_set,
            SetPolicy(name="eval", models=[MODELS[STRONG][0], MODELS[WEAK][0]], actor="routing-eval"),
            RoutingPolicy,
        )
        learn_rows, score_rows = load(folder, benchmark, limit)
        started = time.perf_counter()
        before = await previews(rw, benchmark, score_rows)
        learnt = await learn(settings, benchmark, learn_rows)
        await asyncio.sleep(3)  # the learner refresh (1 s) and the snapshots (0.25 s) catch up
        after = await previews(rw, benchmark, score_rows)
    scores = [advantage(p) for p in after]
    rng = random.Random(1)
    return {
        "learn_rows": len(learn_rows),
        "score_rows": len(score_rows),
        "learning": learnt,
        "learnt": report(score_rows, scores),
        "prior_only": report(score_rows, [advantage(p) for p in before]),
        "random": report(score_rows, [rng.random() for _ in score_rows]),
        "chosen_at_default_bias": choices(score_rows, after),
        "confidence_mean": round(sum(p.selected.confidence for p in after if p.selected) / len(after), 4),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="rows per benchmark (before the split)")
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    catalog = Path(tempfile.mkdtemp(prefix="rw-eval-")) / "catalog.toml"
    catalog.write_text(CATALOG)
    os.environ["ROUTEWISE_CATALOG_PATH"] = str(catalog)  # every service of the stack reads it
    results: dict[str, Any] = {}
    for benchmark in FILES:
        with environment(dict.fromkeys(SERVICES, 1)) as (env, _):
            settings = Settings(nats_url=env.nats_url, namespace=env.namespace, request_timeout=30)
            results[benchmark] = asyncio.run(evaluate(settings, benchmark, args.data, args.limit))
        print(benchmark, json.dumps(results[benchmark]), flush=True)
    path = write_results("routing_eval", {"limit": args.limit, "split": "half learn, half score (seed 0)", **results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
