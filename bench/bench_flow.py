"""Benchmark: N files in flight at once, each run a coroutine of one serving process or a process of its own.

In one run, on this machine, against a Prefect server of its own (`--stack sqlite`: `prefect
server start` on SQLite; `--stack scale`: PostgreSQL and Redis, as `make stack-scale`), driven
only through events posted to `POST /api/events` in the webhook templates' shapes:

  reference_process_per_run  Prefect's runner (FLOW_SERVING=process) with 20 files waiting: the
                         PSS of each run's process and of the runner, the memory reference
  api_calls              `--api-files` files kicked off and reconciled one after another through a
                         counting proxy (bench/api_counter.py): HTTP requests and websocket
                         messages the serving process and its runs sent per file, by route
  kickoff_burst          N kickoffs at once (the Kickoff trigger makes their runs), until every run
                         waits on its four stages: how long, and whether all waited at once
  memory_and_idle        with N files waiting: the serving process's PSS per waiting file, and its
                         CPU over `--idle-seconds` with no event arriving
  probe_latency          with N files waiting, `--probes` more files one at a time: kickoff ->
                         Running, and Reconciliation -> final state (its other stages already seen)
  stuck_and_healthy      of the N, the stuck ones (never reconciled) keep waiting while up to 100
                         healthy ones get their stage events: how long after its last event each
                         healthy file ends
  outcomes               every file's final state and message against what it was built for
                         (matched, mismatched, invalid, overdue, reordered, duplicated)
  in_flight              the summary the issue's targets read, comparable from run to run

Each measurement prints one JSON object on stdout; progress goes to stderr. Times are the
server's (run start and end) against the events' `occurred`, all on this machine's clock.

    .venv/bin/python bench/bench_flow.py --files 1000                          # SQLite, coroutines
    .venv/bin/python bench/bench_flow.py --files 10000 --stack scale           # the scale stack
    .venv/bin/python bench/bench_flow.py --files 20 --serving process          # Prefect's runner
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from api_counter import ApiCounter

from configuration import REPO_ROOT
from devstack.prefect_queries import pipeline_events as events
from devstack.prefect_queries.flow_runs import FINAL_STATES, runs_by_kickoff, timestamp, wait_for_run
from devstack.scale_stack import ScaleStack
from devstack.services import PrefectServer
from devstack.services.flow_server import FlowServer
from devstack.supervision.process_stats import cpu_seconds, descendants, pss_kib
from devstack.supervision.processes import ServiceError, wait_until
from prefect_flows.deployment import same_deadlines

TARGETS = {
    "pss_mib_per_waiting_file": 1.0,
    "serving_cpu_idle_percent": 5.0,
    "kickoff_to_running_p50_s": 1.0,
    "kickoff_to_running_p99_s": 5.0,
    "reconciliation_to_final_p50_s": 0.5,
    "healthy_end_after_last_event_max_s": 2.0,
}
KINDS = ("matched", "mismatched", "invalid", "overdue", "reordered", "duplicated")
BATCH = 20  # events per request
EVENTS_PER_SECOND = 400.0  # well below the ~1,000/s a SQLite Prefect server keeps
# Runs a second the API shows waiting, for the default deadline. Measured here: 1.7 on SQLite
# (Prefect's automation makes them that fast); on the scale stack about 8 are made a second, but at
# 10,000 its services' backlog let the API show only about 5 a second waiting.
START_RATE = {"sqlite": 1.5, "scale": 4.0}


def emit(measurement: str, **fields: Any) -> dict[str, Any]:
    record = {"measurement": measurement, **fields}
    print(json.dumps(record), flush=True)
    return record


def progress(message: str) -> None:
    print(f"[bench_flow {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))], 3)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": round(statistics.median(values), 3),
        "p95_s": percentile(values, 0.95),
        "p99_s": percentile(values, 0.99),
        "max_s": round(max(values), 3),
    }


def since(event: dict[str, Any], moment: str) -> float:
    return (timestamp(moment) - datetime.fromisoformat(event["occurred"])).total_seconds()


def now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class File:
    """One file of the benchmark and the outcome it is built to have."""

    kind: str
    sent: int
    label: str
    file_name: str = ""
    tracking_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        self.file_name = self.file_name or f"{self.label}-{self.tracking_id[:8]}.csv"
        self.kickoff = events.kickoff(self.file_name, self.tracking_id)
        self._stages: list[dict[str, Any]] = []

    @property
    def stages(self) -> list[dict[str, Any]]:
        """Its four stage events, stamped when first asked for: when they are about to be sent."""
        if not self._stages:
            received: int | str = self.sent
            if self.kind == "mismatched":
                received = self.sent - 3
            elif self.kind == "invalid":
                received = f"{self.sent}x"
            self._stages = events.stages(self.file_name, self.tracking_id, self.sent, received)
        return self._stages

    @property
    def stuck(self) -> bool:
        return self.kind == "overdue"

    def stage_events(self) -> list[dict[str, Any]]:
        if self.kind == "overdue":
            return self.stages[:3]
        if self.kind == "reordered":
            return self.stages[::-1]
        if self.kind == "duplicated":
            return self.stages + self.stages
        return self.stages

    def expected(self) -> tuple[str, str]:
        sent = self.sent
        return {
            "mismatched": ("FAILED", re.escape(f"sent {sent}, received {sent - 3} (3 missing)")),
            "invalid": (
                "FAILED",
                r"Reconciliation event \S+ has totalRecordsReceived '\d+x', which is not a whole number",
            ),
            "overdue": (
                "FAILED",
                r"overdue: waited .+ after kickoff, never saw Reconciliation \(deadline .+\)",
            ),
        }.get(self.kind, ("COMPLETED", re.escape(f"{sent} records sent, {sent} received")))


class FlowBench:
    """A Prefect stack of the benchmark's own, serve.py against it, and files driven through them."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.logs = work / "logs"
        self.http = httpx.Client(timeout=120)
        self.stack: ScaleStack | None = None
        self._server: PrefectServer | None = None
        self._flow: FlowServer | None = None
        self.postgres_dir: Path | None = None

    # -- the stack and the serving process

    def start_stack(self) -> None:
        deadlines = same_deadlines(self.args.deadline)
        if self.args.stack == "scale":
            self.postgres_dir = Path(tempfile.mkdtemp(prefix="bench-flow-postgres-"))
            self.stack = ScaleStack(self.work, self.postgres_dir, flow_settings=deadlines).start(progress)
            self._server = self.stack.prefect
            self.stack.flows.stop()  # the benchmark starts its own serve.py, several times
        else:
            self._server = PrefectServer(self.work / "prefect", self.logs).start()

    @property
    def server(self) -> PrefectServer:
        assert self._server, "start_stack() first"
        return self._server

    @property
    def flow(self) -> FlowServer:
        assert self._flow, "serve() first"
        return self._flow

    @property
    def api(self) -> str:
        return self.server.api_url

    def serve(self, serving: str, run_limit: int, name: str, api_url: str | None = None) -> FlowServer:
        """Start serve.py (stopping any earlier one); `api_url` points it elsewhere (the counter)."""
        if self._flow:
            self._flow.stop()
        settings = {
            **same_deadlines(self.args.deadline),
            "FLOW_SERVING": serving,
            "FLOW_RUN_LIMIT": str(run_limit),
            "FLOW_UNANNOUNCED_GRACE_SECONDS": str(self.args.deadline),
        }
        if api_url:
            settings["PREFECT_API_URL"] = api_url
        self._flow = FlowServer(self.server, self.logs, settings=settings, name=name).start(timeout=180)
        self.deployment_id = self._flow.deployment_id()
        return self._flow

    def stop(self) -> None:
        if self._flow:
            self._flow.stop()
        if self.stack:
            self.stack.stop()
        elif self._server:
            self._server.stop()
        if self.postgres_dir:
            shutil.rmtree(self.postgres_dir, ignore_errors=True)
        self.http.close()

    # -- driving files and reading them back

    def post(self, posted: list[dict[str, Any]]) -> None:
        """POST in batches, paced below the rate at which a Prefect server drops events."""
        for start in range(0, len(posted), BATCH):
            began = time.monotonic()
            events.post_events(self.api, posted[start : start + BATCH], client=self.http)
            time.sleep(max(0.0, BATCH / EVENTS_PER_SECOND - (time.monotonic() - began)))

    def count(self, kind: str, body: dict[str, Any]) -> int:
        for _ in range(30):
            response = self.http.post(f"{self.api}/{kind}/count", json=body)
            if response.status_code != 503:
                response.raise_for_status()
                return response.json()
            time.sleep(1)
        response.raise_for_status()
        return 0

    def running(self, label: str) -> int:
        body = {
            "deployments": {"id": {"any_": [self.deployment_id]}},
            "flow_runs": {"name": {"like_": f"{label}-"}, "state": {"type": {"any_": ["RUNNING"]}}},
        }
        return self.count("flow_runs", body)

    def waiting(self, label: str) -> int:
        """Runs of files labelled `label` that wait on all four stages."""
        body = {
            "deployments": {"id": {"any_": [self.deployment_id]}},
            "flow_runs": {"name": {"like_": f"{label}-"}, "state": {"type": {"any_": ["RUNNING"]}}},
            "task_runs": {"name": {"like_": "wait for"}, "state": {"type": {"any_": ["RUNNING"]}}},
        }
        return self.count("task_runs", body) // 4

    def finished(self, label: str) -> int:
        body = {
            "deployments": {"id": {"any_": [self.deployment_id]}},
            "flow_runs": {"name": {"like_": f"{label}-"}, "state": {"type": {"any_": sorted(FINAL_STATES)}}},
        }
        return self.count("flow_runs", body)

    def runs(self) -> dict[str, dict[str, Any]]:
        return runs_by_kickoff(self.api, self.deployment_id)

    def wait_waiting(self, label: str, count: int, timeout: float) -> float:
        """Seconds until `count` runs of `label` wait at once."""
        return self._wait_for(self.waiting, "wait on their stages", label, count, timeout)

    def wait_finished(self, label: str, count: int, timeout: float) -> float:
        return self._wait_for(self.finished, "finished", label, count, timeout)

    def _wait_for(
        self, counted: Callable[[str], int], being: str, label: str, count: int, timeout: float
    ) -> float:
        """Seconds until `counted(label)` reaches `count`; progress every 30 s."""
        started = last_said = time.monotonic()
        while (now := counted(label)) < count:
            if time.monotonic() - started > timeout:
                raise ServiceError(f"after {timeout:g} s only {now} of {count} {label} runs {being}")
            if time.monotonic() - last_said > 30:
                progress(f"{now} of {count} {label} runs {being}")
                last_said = time.monotonic()
            time.sleep(2)
        return time.monotonic() - started

    def serving_pids(self) -> tuple[int, list[int]]:
        """The serving process and the processes it started (one per run under Prefect's runner)."""
        assert self.flow.process, "started by serve()"
        return self.flow.process.pid, descendants(self.flow.process.pid)

    # -- phases

    def reference_process_per_run(self) -> dict[str, Any]:
        """Prefect's runner with 20 files waiting: the memory of a waiting file as a process."""
        files = [File(KINDS[n % 3], 10 + n, "reference") for n in range(20)]
        self.serve("process", 20, "flow-server-reference")
        self.post([file.kickoff for file in files])
        self.wait_waiting("reference", len(files), timeout=600)
        runner, runs = self.serving_pids()
        pss = [pss_kib(pid) / 1024 for pid in runs]
        record = emit(
            "reference_process_per_run",
            runs_waiting=len(files),
            processes=len(runs),
            pss_mib_per_waiting_run=round(statistics.mean(pss), 1),
            runner_pss_mib=round(pss_kib(runner) / 1024, 1),
        )
        self.post([event for file in files for event in file.stages])
        self.wait_finished("reference", len(files), timeout=600)
        return record

    def api_calls(self, serving: str, count: int) -> dict[str, Any]:
        """Files one after another through a counting proxy: what each costs the server."""
        counter = ApiCounter(self.server.ui_url).start()
        try:
            self.serve(serving, 100, "flow-server-api-calls", api_url=counter.api_url)
            started = counter.snapshot()
            time.sleep(self.args.idle_seconds)  # the serving process's own polling, with no file
            idle = counter.snapshot()
            began = time.monotonic()
            for n in range(count):
                file = File("matched", 100 + n, "api")
                self.post([file.kickoff])
                wait_for_run(self.api, self.deployment_id, file.kickoff["id"], {"RUNNING"}, 120)
                self.post(file.stages)
                wait_for_run(self.api, self.deployment_id, file.kickoff["id"], FINAL_STATES, 120)
            elapsed = time.monotonic() - began
            done = counter.snapshot()
        finally:
            self.flow.stop()
            self._flow = None
            counter.stop()
        # What the files cost: all that was asked while they ran, less the polling that waiting
        # alone asks for in as long a time.
        scale = elapsed / self.args.idle_seconds
        idle_requests = idle[0] - started[0]
        per_route = {
            route: (done[0][route] - idle[0][route] - idle_requests[route] * scale) / count
            for route in done[0]
        }
        per_route = {route: round(value, 2) for route, value in per_route.items() if value >= 0.05}
        messages = done[1] - idle[1]
        idle_messages = idle[1] - started[1]
        return emit(
            "api_calls",
            serving=serving,
            files=count,
            requests_per_file=round(sum(per_route.values()), 1),
            websocket_messages_per_file=round(
                (sum(messages.values()) - sum(idle_messages.values()) * scale) / count, 1
            ),
            idle_requests_per_minute=round(sum(idle_requests.values()) / self.args.idle_seconds * 60, 1),
            by_route_per_file=dict(sorted(per_route.items(), key=lambda item: -item[1])),
        )

    def kickoff_burst(self, files: list[File], run_limit: int) -> dict[str, Any]:
        self.serve(self.args.serving, run_limit, "flow-server")
        expected = min(len(files), run_limit)
        progress(f"{len(files)} kickoffs at once; waiting for {expected} runs to wait on their stages")
        began = time.monotonic()
        self.post([file.kickoff for file in files])
        posted = time.monotonic() - began
        try:
            seconds = self.wait_waiting("file", expected, timeout=self.args.deadline - 60)
            all_at_once = expected == len(files)
        except ServiceError as error:
            progress(f"not all wait: {error}")
            seconds, all_at_once = time.monotonic() - began, False
        return emit(
            "kickoff_burst",
            files=len(files),
            run_limit=run_limit,
            kickoffs_posted_s=round(posted, 1),
            waiting=self.waiting("file"),
            all_waiting_at_once=all_at_once,
            seconds_until_all_waiting=round(seconds, 1),
            files_per_second=round(expected / seconds, 2) if seconds else None,
        )

    def memory_and_idle(self, waiting: int) -> dict[str, Any]:
        serving, children = self.serving_pids()
        pss = (pss_kib(serving) + sum(pss_kib(pid) for pid in children)) / 1024
        progress(f"{self.args.idle_seconds:g} s of idle CPU with {waiting} files waiting")
        before = cpu_seconds(serving, *children)
        time.sleep(self.args.idle_seconds)
        cpu = (cpu_seconds(serving, *children) - before) / self.args.idle_seconds * 100
        assert self.server.process, "started by start_stack()"
        server_pids = [self.server.process.pid, *descendants(self.server.process.pid)]
        if self.server.services:
            server_pids.append(self.server.services.pid)
        return emit(
            "memory_and_idle",
            files_waiting=waiting,
            serving_processes=1 + len(children),
            serving_pss_mib=round(pss, 1),
            pss_mib_per_waiting_file=round(pss / waiting, 3),
            serving_cpu_idle_percent=round(cpu, 2),
            prefect_server_pss_mib=round(sum(pss_kib(pid) for pid in server_pids) / 1024, 1),
        )

    def probe_latency(self, count: int, waiting: int) -> dict[str, Any]:
        to_running, to_final = [], []
        for n in range(count):
            file = File("matched", 1000 + n, "probe")
            self.post([file.kickoff])
            run = wait_for_run(self.api, self.deployment_id, file.kickoff["id"], {"RUNNING"}, 300)
            to_running.append(since(file.kickoff, run["start_time"]))
            self.post(file.stages[:3])
            # The API shows task runs once Prefect's services recorded their events: under a
            # backlog (the scale stack at thousands of files) that takes minutes.
            wait_until(partial(self._seen_three, file), 900, f"{file.file_name}'s first three stages")
            file.stages[3] = events.shifted(
                file.stages[3], since(file.stages[3], now())
            )  # stamped as it is sent
            self.post(file.stages[3:])
            final = wait_for_run(self.api, self.deployment_id, file.kickoff["id"], FINAL_STATES, 120)
            to_final.append(since(file.stages[3], final["end_time"]))
            progress(
                f"probe {n + 1}/{count}: running after {to_running[-1]:.2f} s, "
                f"final {to_final[-1]:.2f} s after its Reconciliation"
            )
        return emit(
            "probe_latency",
            files_waiting=waiting,
            probes=count,
            kickoff_to_running=spread(to_running),
            reconciliation_to_final=spread(to_final),
        )

    def _seen_three(self, file: File) -> bool:
        body = {
            "flow_runs": {"name": {"like_": file.file_name}},
            "task_runs": {"name": {"like_": "wait for"}, "state": {"type": {"any_": ["COMPLETED"]}}},
        }
        return self.count("task_runs", body) >= 3

    def stuck_and_healthy(self, files: list[File]) -> tuple[dict[str, Any], list[File]]:
        """The record, and the healthy files that got their events."""
        stuck = [file for file in files if file.stuck]
        healthy = [file for file in files if not file.stuck][:100]
        for file in stuck:
            self.post(file.stage_events())  # all but their Reconciliation: they stay waiting
        last_posted = {}
        for file in healthy:
            self.post(file.stage_events())
            last_posted[file.tracking_id] = file.stage_events()[-1]
        self.wait_until_final(healthy)
        runs = self.runs()
        after_last = [
            since(last_posted[file.tracking_id], runs[file.kickoff["id"]]["end_time"]) for file in healthy
        ]
        still_waiting = self.running("file")
        record = emit(
            "stuck_and_healthy",
            stuck=len(stuck),
            healthy=len(healthy),
            stuck_still_waiting=still_waiting >= len(stuck),
            healthy_end_after_last_event=spread(after_last),
            healthy_over_2_s=sum(seconds > 2 for seconds in after_last),
        )
        return record, healthy

    def wait_until_final(self, files: list[File], timeout: float = 600) -> None:
        wanted = {file.kickoff["id"] for file in files}

        def done() -> bool:
            runs = self.runs()
            return all(runs.get(kickoff, {}).get("state_type") in FINAL_STATES for kickoff in wanted)

        wait_until(done, timeout, f"{len(files)} runs to finish", interval=2)

    def outcomes(self, files: list[File], done: list[File]) -> dict[str, Any]:
        rest = [file for file in files if not file.stuck and file not in done]
        progress(
            f"stage events of the other {len(rest)} healthy files; "
            f"overdue ones end {self.args.deadline:g} s after kickoff"
        )
        self.post([event for file in rest for event in file.stage_events()])
        self.wait_finished("file", len(files), timeout=self.args.deadline + 1800)
        runs = self.runs()
        wrong = []
        for file in files:
            run = runs[file.kickoff["id"]]
            state, message = file.expected()
            if run["state_type"] != state or not re.fullmatch(message, run["state"]["message"] or ""):
                wrong.append(
                    {
                        "file": file.file_name,
                        "kind": file.kind,
                        "got": [run["state_type"], run["state"]["message"]],
                    }
                )
        return emit(
            "outcomes",
            files=len(files),
            kinds=dict(Counter(file.kind for file in files)),
            wrong_outcomes=len(wrong),
            wrong=wrong[:5],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="files in flight at once (N)")
    parser.add_argument("--stack", choices=["sqlite", "scale"], default="sqlite")
    parser.add_argument("--serving", choices=["coroutine", "process"], default="coroutine")
    parser.add_argument(
        "--run-limit", type=int, help="FLOW_RUN_LIMIT (default: N for coroutines, 20 for processes)"
    )
    parser.add_argument("--probes", type=int, default=20, help="files measured one at a time while N wait")
    parser.add_argument("--api-files", type=int, default=10, help="files sent through the counting proxy")
    parser.add_argument("--idle-seconds", type=float, default=30, help="how long idle CPU is measured")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip Prefect's runner at 20 (the memory reference)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        help="every stage's deadline, s: overdue files end then (default: 600 s plus the time N runs "
        "need to start at the stack's measured rate, twice over)",
    )
    args = parser.parse_args()
    # Room for the probes too, which start while the N files wait.
    run_limit = args.run_limit or (args.files + args.probes + 10 if args.serving == "coroutine" else 20)
    args.deadline = args.deadline or 600 + 2 * min(args.files, run_limit) / START_RATE[args.stack]
    work = REPO_ROOT / ".local" / "bench" / f"flow-{time.strftime('%Y%m%d-%H%M%S')}"
    bench = FlowBench(work, args)
    progress(
        f"{args.files} files on the {args.stack} stack, served as {args.serving}s; "
        f"deadline {args.deadline:g} s; logs in {work / 'logs'}"
    )
    try:
        bench.start_stack()
        reference = None if args.no_reference else bench.reference_process_per_run()
        calls = bench.api_calls(args.serving, args.api_files)
        files = [File(KINDS[n % len(KINDS)], 10 + n, "file") for n in range(args.files)]
        burst = bench.kickoff_burst(files, run_limit)
        waiting = burst["waiting"]
        memory = bench.memory_and_idle(waiting)
        probes = bench.probe_latency(args.probes, waiting)
        contention, done = bench.stuck_and_healthy(files)
        outcomes = bench.outcomes(files, done)
        emit(
            "in_flight",
            stack=args.stack,
            serving=args.serving,
            files=args.files,
            all_waiting_at_once=burst["all_waiting_at_once"],
            wrong_outcomes=outcomes["wrong_outcomes"],
            pss_mib_per_waiting_file=memory["pss_mib_per_waiting_file"],
            reference_pss_mib_per_waiting_run=reference and reference["pss_mib_per_waiting_run"],
            serving_cpu_idle_percent=memory["serving_cpu_idle_percent"],
            kickoff_to_running_p50_s=probes["kickoff_to_running"]["p50_s"],
            kickoff_to_running_p99_s=probes["kickoff_to_running"]["p99_s"],
            reconciliation_to_final_p50_s=probes["reconciliation_to_final"]["p50_s"],
            healthy_end_after_last_event_max_s=contention["healthy_end_after_last_event"]["max_s"],
            api_calls_per_file=calls["requests_per_file"],
            targets=TARGETS,
        )
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
