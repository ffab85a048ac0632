"""Benchmark: the SQLite stack against the scale stack (PostgreSQL + Redis, work pool), side by side.

In one run, on this machine, each stack fed through its own webhook gateway:

  events_stored    per stack and offered rate: Event Grid deliveries of `--events-per-request`
                   BlobCreated events each, posted at the offered rate for `--seconds` to a
                   gateway whose ceiling is out of the way (100,000 events/s, batches of 100,
                   8 at once), so that Prefect is what is probed; after the drain, how many
                   Prefect stored. `forwarded_per_second` is the rate Prefect answered 204 at.
  zero_loss_rate   per stack: the highest forwarded rate at which Prefect stored every event.
  gateway_default  the SQLite stack behind a gateway at its default ceiling (500 events/s),
                   offered the highest rate: it queues, and Prefect must store every event.
  files_in_flight  per stack: `--files` kickoffs at once through the gateway, then, once the
                   runs wait on their stages, the stage events (succeed, mismatch and overdue
                   files). One served process (`serve.py`, FLOW_RUN_LIMIT 20) on SQLite against
                   the work pool with two workers (`--worker-limit` each) on the scale stack:
                   runs waiting at once, wrong outcomes, memory (PSS) of the runs and servers.
  verdict          the targets: scale >= 3x SQLite's zero-loss rate, the default gateway loses
                   nothing, `--files` (100) in flight on the scale stack with no wrong outcome.

One JSON object per measurement on stdout; progress on stderr.

    .venv/bin/python bench/bench_scale.py                                      # the full run
    .venv/bin/python bench/bench_scale.py --rates 500 2000 --seconds 5 --files 20   # a quick check
    .venv/bin/python bench/bench_scale.py --stacks scale --rates 3000                # one stack only
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bench_flow import emit
from webhook_files import plan, send

from configuration import REPO_ROOT
from devstack.prefect_queries.events import count_events
from devstack.prefect_queries.flow_runs import FINAL_STATES, runs_by_tracking_id
from devstack.scale_stack import ScaleStack
from devstack.services import AZURITE_ACCOUNT, Gateway, PrefectServer
from devstack.services.flow_server import FlowServer
from devstack.services.work_pool import WorkPool
from devstack.supervision.process_stats import cpu_seconds, descendants, pss_kib
from devstack.supervision.processes import wait_until
from prefect_flows.deployment import DEFAULT_RUN_LIMITS, same_deadlines

# The gateway that probes each stack: ceiling out of the way, batches big and several at once, so
# that the rate reaching Prefect is bounded by Prefect's answers, not by the gateway.
PROBE = ["--max-events-per-second", "100000", "--batch-size", "100", "--max-in-flight", "8"]
BLOB = "Microsoft.Storage.BlobCreated"
MIX = ("succeed",) * 6 + ("mismatch",) * 3 + ("overdue",)
TARGETS = {"zero_loss_ratio": 3.0, "files_in_flight": 100}


def progress(message: str) -> None:
    print(f"[bench_scale] {message}", file=sys.stderr, flush=True)


def deliveries(prefix: str, count: int, per_request: int) -> list[list[dict[str, Any]]]:
    """`count` BlobCreated events in Event Grid deliveries of `per_request`, their URLs under `prefix`."""
    events = [
        {"eventType": BLOB, "id": str(uuid.uuid4()), "data": {"api": "PutBlob", "url": f"{prefix}{n}.csv"}}
        for n in range(count)
    ]
    return [events[start : start + per_request] for start in range(0, count, per_request)]


async def offer(url: str, bodies: list[list[dict[str, Any]]], rate: float) -> float:
    """POST each body at `rate` events/s (as far as the gateway keeps up); the seconds it took."""
    started = time.monotonic()
    limit = asyncio.Semaphore(64)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:

        async def post(body: list[dict[str, Any]]) -> None:
            # As Event Grid does, a delivery whose connection broke is sent again (the gateway keeps one).
            for attempt in range(3):
                try:
                    async with limit:
                        response = await client.post(url, json=body)
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise
            if response.status_code != 204:
                raise RuntimeError(f"the gateway answered {response.status_code}: {response.text[:300]}")

        tasks, sent = [], 0
        for body in bodies:
            await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
            tasks.append(asyncio.create_task(post(body)))
            sent += len(body)
        await asyncio.gather(*tasks)
    return time.monotonic() - started


def events_stored(
    stack: str,
    api_url: str,
    gateway: Gateway,
    rate: float,
    args: argparse.Namespace,
    servers: dict[str, int],
) -> dict[str, Any]:
    """Offer `rate` events/s for `args.seconds` through `gateway`; count what Prefect stored after draining.

    `servers` (name: pid) are the stack's processes whose CPU time per stored event is reported.
    """
    count = int(rate * args.seconds)
    cpu_before = {name: cpu_seconds(pid, *descendants(pid)) for name, pid in servers.items()}
    prefix = f"http://127.0.0.1:10000/{AZURITE_ACCOUNT}/bench-{uuid.uuid4().hex[:8]}/"
    since = datetime.now(UTC)
    delivered_before = gateway.health()["delivered"]
    started = time.monotonic()
    offered_seconds = asyncio.run(
        offer(gateway.hook_url("azure-storage"), deliveries(prefix, count, args.events_per_request), rate)
    )
    wait_until(
        lambda: gateway.health()["delivered"] - delivered_before >= count,
        600,
        "the gateway to forward everything",
        interval=0.2,
    )
    forwarded_seconds = time.monotonic() - started
    stored, last_change = -1, time.monotonic()
    while stored < count and time.monotonic() - last_change < args.patience:
        now = count_events(api_url, [BLOB], {"id_prefix": [prefix]}, since)
        if now != stored:
            stored, last_change = now, time.monotonic()
        time.sleep(1)
    drained_seconds = last_change - started
    cpu_ms = {
        name: (cpu_seconds(pid, *descendants(pid)) - cpu_before[name]) * 1000 for name, pid in servers.items()
    }
    return emit(
        "events_stored",
        stack=stack,
        offered_per_second=rate,
        events=count,
        accepted_per_second=round(count / offered_seconds, 1),
        forwarded_per_second=round(count / forwarded_seconds, 1),
        stored=stored,
        lost=count - stored,
        stored_per_second=round(stored / drained_seconds, 1),
        drain_seconds=round(drained_seconds - forwarded_seconds, 1),
        cpu_ms_per_stored_event={name: round(ms / max(stored, 1), 3) for name, ms in cpu_ms.items()},
    )


def zero_loss(stack: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest rate Prefect took events at (forwarded) with none lost, and where losses began."""
    kept = [run for run in runs if run["lost"] == 0]
    lossy = [run["offered_per_second"] for run in runs if run["lost"]]
    return emit(
        "zero_loss_rate",
        stack=stack,
        zero_loss_events_per_second=max((run["forwarded_per_second"] for run in kept), default=0),
        highest_offered_without_loss=max((run["offered_per_second"] for run in kept), default=0),
        first_loss_at_offered=min(lossy, default=None),
    )


def files_in_flight(
    stack: str,
    api_url: str,
    gateway: Gateway,
    deployment_id: str,
    capacity: int,
    run_parents: list[int],
    server_roots: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """`args.files` files at once: kickoffs, then (once the runs wait) their stages; outcomes and memory."""
    files = plan(args.files, f"{stack}-flight", MIX)
    requests = {file.tracking_id: file.requests() for file in files}
    sent_at = datetime.now(UTC) - timedelta(seconds=1)
    started = time.monotonic()
    send(gateway.url, [sent[0] for sent in requests.values()])
    waiting = min(args.files, capacity)
    progress(f"{stack}: {args.files} kickoffs sent; waiting for {waiting} runs to wait on their stages")
    mine = {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}},
    }
    waits = {**mine, "task_runs": {"name": {"like_": "wait for"}, "state": {"type": {"any_": ["RUNNING"]}}}}
    wait_until(
        lambda: httpx.post(f"{api_url}/task_runs/count", json=waits, timeout=60).json() >= 4 * waiting,
        args.deadline - 10,
        f"{waiting} runs to wait on their four stages",
        interval=2,
    )
    all_waiting_after = time.monotonic() - started
    runs_pss = [pss_kib(pid) for parent in run_parents for pid in descendants(parent)]
    servers_pss = sum(pss_kib(pid) for root in server_roots for pid in [root, *descendants(root)])
    send(gateway.url, [request for sent in requests.values() for request in sent[1:]])
    progress(
        f"{stack}: stage events sent; waiting for {args.files} outcomes "
        f"(overdue ones after {args.deadline:g} s)"
    )

    def ended() -> dict[str, dict[str, Any]] | None:
        runs = runs_by_tracking_id(api_url, deployment_id, sent_at)
        final = [runs.get(file.tracking_id, {}).get("state_type") in FINAL_STATES for file in files]
        return runs if all(final) else None

    runs = wait_until(ended, args.deadline + 120 + 3 * args.files, f"{args.files} outcomes", interval=2)
    wrong = [problem for file in files if (problem := file.judge(runs.get(file.tracking_id)))]
    return emit(
        "files_in_flight",
        stack=stack,
        files=args.files,
        waiting_at_once=waiting,
        all_waiting_after_s=round(all_waiting_after, 1),
        total_s=round(time.monotonic() - started, 1),
        wrong_outcomes=len(wrong),
        wrong=wrong[:3],
        run_processes=len(runs_pss),
        run_mean_pss_mib=round(statistics.mean(runs_pss) / 1024, 1) if runs_pss else None,
        runs_pss_mib=round(sum(runs_pss) / 1024),
        servers_pss_mib=round(servers_pss / 1024),
    )


def bench_sqlite(
    work: Path, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    logs = work / "logs"
    server = PrefectServer(work / "prefect", logs).start()
    gateways: list[Gateway] = []
    flow = None
    try:
        probe = Gateway(work / "gateway-probe", logs, server.api_url, options=PROBE).start()
        gateways.append(probe)
        assert server.process, "started above"
        servers = {"prefect-server": server.process.pid}
        runs = [events_stored("sqlite", server.api_url, probe, rate, args, servers) for rate in args.rates]
        default_gateway = Gateway(work / "gateway", logs, server.api_url).start()
        gateways.append(default_gateway)
        default = events_stored(
            "sqlite-gateway-default", server.api_url, default_gateway, max(args.rates), args, servers
        )
        flow = FlowServer(
            server, logs, settings={**same_deadlines(args.deadline), "FLOW_SERVING": "process"}
        ).start()
        assert flow.process, "started just now"
        flight = files_in_flight(
            "sqlite",
            server.api_url,
            default_gateway,
            flow.deployment_id(),
            DEFAULT_RUN_LIMITS["process"],
            [flow.process.pid],
            [server.process.pid],
            args,
        )
        return runs, default, flight
    finally:
        for part in [flow, *gateways, server]:
            if part:
                part.stop()


def bench_scale(work: Path, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    postgres_dir = Path(tempfile.mkdtemp(prefix="bench-scale-postgres-"))
    # The work pool: this benchmark measures the stacks as issue 7 built them (bench_flow.py
    # measures coroutine serving on both).
    stack = ScaleStack(
        work, postgres_dir, serving="process", worker_limit=args.worker_limit,
        flow_settings=same_deadlines(args.deadline),
    )  # fmt: skip
    probe = None
    try:
        stack.start(progress)
        probe = Gateway(work / "gateway-probe", work / "logs", stack.prefect.api_url, options=PROBE).start()
        servers = {
            process.name: process.pid
            for process in (
                stack.prefect.process,
                stack.prefect.services,
                stack.postgres.process,
                stack.redis.process,
            )
            if process  # all started above
        }
        runs = [
            events_stored("scale", stack.prefect.api_url, probe, rate, args, servers) for rate in args.rates
        ]
        # Stored is not yet processed: the Kickoff trigger reads the same backlog, and would start runs late.
        progress("scale: waiting for the background services to read every event in Redis")
        wait_until(stack.services_caught_up, 900, "the background services to catch up", interval=2)
        workers = stack.flows
        assert isinstance(workers, WorkPool), "serving='process' above"
        flight = files_in_flight(
            "scale",
            stack.prefect.api_url,
            stack.gateway,
            stack.flows.deployment_id(),
            2 * args.worker_limit,
            [worker.pid for worker in workers.processes],
            list(servers.values()),
            args,
        )
        return runs, flight
    finally:
        if probe:
            probe.stop()
        stack.stop()
        shutil.rmtree(postgres_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[500, 1000, 1500, 2000, 3000, 4000],
        help="offered events per second, one measurement each",
    )
    parser.add_argument("--seconds", type=float, default=10, help="how long each rate is offered")
    parser.add_argument(
        "--events-per-request", type=int, default=20, help="BlobCreated events per Event Grid delivery"
    )
    parser.add_argument(
        "--patience", type=float, default=20, help="the drain ends after this long without a new stored event"
    )
    parser.add_argument("--files", type=int, default=100, help="files in flight at once")
    parser.add_argument(
        "--worker-limit", type=int, default=50, help="flow runs per worker on the scale stack"
    )
    parser.add_argument("--deadline", type=float, help="every stage's deadline (default 60 s + 3 s per file)")
    parser.add_argument(
        "--stacks",
        nargs="+",
        choices=["sqlite", "scale"],
        default=["sqlite", "scale"],
        help="which stacks to measure (the verdict needs both)",
    )
    args = parser.parse_args()
    args.deadline = args.deadline or 60 + 3 * args.files
    work = REPO_ROOT / ".local" / "bench" / f"scale-{time.strftime('%Y%m%d-%H%M%S')}"
    progress(f"stacks: {', '.join(args.stacks)} (logs under {work})")
    if "sqlite" in args.stacks:
        sqlite_runs, default, sqlite_flight = bench_sqlite(work / "sqlite", args)
        sqlite_zero_loss = zero_loss("sqlite", sqlite_runs)
    if "scale" in args.stacks:
        scale_runs, scale_flight = bench_scale(work / "scale", args)
        scale_zero_loss = zero_loss("scale", scale_runs)
    if len(args.stacks) < 2:
        return
    sqlite_rate = sqlite_zero_loss["zero_loss_events_per_second"]
    scale_rate = scale_zero_loss["zero_loss_events_per_second"]
    emit(
        "verdict",
        # The target's reading: the rates at which each Prefect took every event without losing one.
        zero_loss_ratio=round(scale_rate / sqlite_rate, 2) if sqlite_rate else None,
        zero_loss_ratio_ok=bool(sqlite_rate) and scale_rate >= TARGETS["zero_loss_ratio"] * sqlite_rate,
        # Offered to the gateway: the highest rate each stack lost nothing at (the scale stack
        # queues in Redis).
        sqlite_lost_nothing_up_to_offered=sqlite_zero_loss["highest_offered_without_loss"],
        scale_lost_nothing_up_to_offered=scale_zero_loss["highest_offered_without_loss"],
        gateway_default_lost_nothing=default["lost"] == 0,
        scale_files_in_flight=scale_flight["waiting_at_once"],
        scale_files_ok=scale_flight["wrong_outcomes"] == 0
        and scale_flight["waiting_at_once"] >= TARGETS["files_in_flight"],
        sqlite_files_in_flight=sqlite_flight["waiting_at_once"],
    )


if __name__ == "__main__":
    main()
