"""Benchmark: webhook requests per second and latency through the gateway, against two references.

In one run, on this machine, with the same load generator and concurrency:
  bare-endpoint   a bare Starlette endpoint under the same uvicorn answering 204 (the ceiling
                  any ASGI gateway on this machine could reach);
  prefect-direct  the same events (rendered by the gateway's own renderer) posted one per
                  request straight to a Prefect server's `POST /api/events`;
  gateway         the summary webhook through `python -m webhooks serve`, forwarding to Prefect.
For the two that reach Prefect it then waits for the events and counts them: `events_lost`
must be 0. Each measurement prints one JSON object; a last `verdict` object checks the targets
(>= 1,000 requests/s, >= half the bare endpoint's rate, p99 < 50 ms, nothing lost).

The load generator is a plain asyncio HTTP/1.1 client with keep-alive connections in this
process (no extra tools to install); on 2 cores it shares the CPU with the server under test,
so the bare endpoint is measured with the same client to keep the comparison fair.

    .venv/bin/python bench/bench_gateway.py                       # 10,000 requests, 16 connections
    .venv/bin/python bench/bench_gateway.py --requests 2000 --concurrency 8
    .venv/bin/python bench/bench_gateway.py --max-events-per-second 50   # forward slower during the burst

uvicorn serves with `httptools` and `uvloop` (its "standard" extras, pinned in
requirements-dev.txt) for every server alike; uninstall them to measure h11 and asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from configuration import REPO_ROOT
from devstack.prefect_queries.events import count_events
from devstack.services import Gateway, PrefectServer, http_ok
from devstack.supervision.processes import ManagedProcess, free_port
from webhooks.__main__ import DEFAULT_MAX_EVENTS_PER_SECOND
from webhooks.catalog import load_catalog
from webhooks.rendering import EventRenderer

HOST = "127.0.0.1"


@dataclass
class Load:
    """What one load run measured."""

    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    def report(self, measurement: str, concurrency: int, **extra: object) -> dict[str, object]:
        cuts = statistics.quantiles(self.latencies, n=100)
        return {
            "measurement": measurement,
            "requests": self.requests,
            "concurrency": concurrency,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.requests / self.seconds, 1),
            "p50_ms": round(cuts[49] * 1000, 2),
            "p99_ms": round(cuts[98] * 1000, 2),
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            **extra,
        }


async def _load(port: int, requests: list[bytes], concurrency: int) -> Load:
    """Send every request over `concurrency` keep-alive connections; time each one."""
    next_request = iter(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        for request in next_request:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line[15:])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return Load(len(requests), time.perf_counter() - started, latencies, statuses)


def run_load(port: int, requests: list[bytes], concurrency: int) -> Load:
    return asyncio.run(_load(port, requests, concurrency))


def http_post(port: int, path: str, body: bytes, key: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
        f"Idempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def wait_for_stored(api_url: str, expected: int, since: datetime, patience: float = 60) -> dict[str, float]:
    """Wait until `expected` Summary events since `since` are stored, or no progress for `patience` s;
    how many were stored, lost, and how long it took."""
    started, last_change, stored = time.monotonic(), time.monotonic(), -1
    while True:
        count = count_events(api_url, ["Summary"], {"id": ["prefect.webhook.summary"]}, since)
        if count != stored:
            stored, last_change = count, time.monotonic()
        if stored >= expected or time.monotonic() - last_change > patience:
            return {
                "events_stored": stored,
                "events_lost": expected - stored,
                "seconds_until_stored": round(time.monotonic() - started, 1),
            }
        time.sleep(0.5)


def bodies(count: int) -> list[tuple[str, bytes]]:
    run = uuid.uuid4().hex[:8]
    return [
        (f"{run}-{n}", json.dumps({"totalRecordsSent": n, "trackingId": f"bench-{run}-{n}"}).encode())
        for n in range(count)
    ]


def serve_bare(port: int) -> None:
    """The reference: a bare Starlette endpoint under the same uvicorn settings as the gateway."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def hook(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hooks/{slug}", hook, methods=["POST"]), Route("/health", health)])
    uvicorn.run(app, host=HOST, port=port, access_log=False, log_level="warning")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--max-events-per-second",
        type=float,
        default=DEFAULT_MAX_EVENTS_PER_SECOND,
        help="the gateway's forwarding ceiling; Prefect ingesting on the same cores slows acceptance",
    )
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return

    emit = lambda record: print(json.dumps(record), flush=True)  # noqa: E731
    work = REPO_ROOT / ".local" / "bench-gateway" / datetime.now().strftime("%Y%m%d-%H%M%S")
    print(
        f"# services, logs and queues under {work} (removed after a run that loses nothing)", file=sys.stderr
    )
    server = PrefectServer(work / "prefect", work / "logs").start()
    bare_port = free_port()
    bare = ManagedProcess(
        "bare", [sys.executable, __file__, "--serve-bare", str(bare_port)], work / "logs" / "bare.log"
    )
    gateway = Gateway(
        work / "gateway",
        work / "logs",
        server.api_url,
        options=["--max-events-per-second", str(args.max_events_per_second)],
    )
    results: dict[str, dict] = {}
    try:
        bare.start().wait_healthy(lambda: http_ok(f"http://{HOST}:{bare_port}/health"), 30)
        gateway.start()
        assert gateway.process is not None  # started just now
        gateway_pid = gateway.process.pid
        summary = EventRenderer(next(w for w in load_catalog() if w.name == "summary"))

        print("# bare endpoint", file=sys.stderr)
        load = run_load(
            bare_port,
            [http_post(bare_port, "/hooks/summary", body, key) for key, body in bodies(args.requests)],
            args.concurrency,
        )
        results["bare"] = load.report("bare-endpoint", args.concurrency)
        emit(results["bare"])

        print("# the same events straight to Prefect's POST /api/events", file=sys.stderr)
        since = datetime.now(UTC)
        api_port, api_path = server.port, "/api/events"
        requests = []
        for key, body in bodies(args.requests):
            (event,) = summary.interpret(
                "POST", [("content-type", "application/json"), ("idempotency-key", key)], body
            ).events
            requests.append(http_post(api_port, api_path, json.dumps([event]).encode(), key))
        load = run_load(api_port, requests, args.concurrency)
        stored = wait_for_stored(server.api_url, args.requests, since)
        results["direct"] = load.report("prefect-direct", args.concurrency, **stored)
        emit(results["direct"])

        print("# through the gateway", file=sys.stderr)
        since = datetime.now(UTC)
        requests = [
            http_post(gateway.port, "/hooks/summary", body, key) for key, body in bodies(args.requests)
        ]
        load = run_load(gateway.port, requests, args.concurrency)
        print(
            f"# waiting for the gateway to drain {gateway.health()['queued']} queued events", file=sys.stderr
        )
        stored = wait_for_stored(server.api_url, args.requests, since)
        results["gateway"] = load.report(
            "gateway", args.concurrency, **stored, gateway_peak_rss_mib=peak_rss_mib(gateway_pid)
        )
        emit(results["gateway"])

        through, reference = results["gateway"], results["bare"]
        emit(
            {
                "measurement": "verdict",
                "gateway_vs_bare": round(
                    through["requests_per_second"] / reference["requests_per_second"], 3
                ),
                "at_least_1000_rps": through["requests_per_second"] >= 1000,
                "at_least_half_of_bare": through["requests_per_second"]
                >= reference["requests_per_second"] / 2,
                "p99_under_50_ms": through["p99_ms"] < 50,
                "zero_lost": through["events_lost"] == 0 and through["statuses"] == {"204": args.requests},
                # Other work on the machine skews every number above: say how busy it was.
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    finally:
        gateway.stop()
        bare.stop()
        server.stop()
    if results["direct"]["events_lost"] == results["gateway"]["events_lost"] == 0:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
