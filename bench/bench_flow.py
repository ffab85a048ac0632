"""Benchmark: how fast the reconciliation flow reacts, and what N files in flight cost.

In one run, on this machine, against its own Prefect server and `prefect_flows/serve.py`,
driven only through events posted to `POST /api/events` (the webhook templates' shapes):

  kickoff_to_running       kickoff event -> flow run Running, one file at a time (poll 0.5 s)
  reconciliation_to_final  Reconciliation event -> run Completed, one file at a time, its other
                           three stages already seen (as in production, where it comes last)
  concurrent_files         N files in flight at once (N = 50): a mix of matched, mismatched,
                           invalid (non-integer count) and overdue files; every outcome checked
  memory_per_waiting_run   PSS of each flow-run process while all N wait
                           (/proc/<pid>/smaps_rollup), with the runner's and the server's
  reference_default_poll   kickoff -> Running with the runner's default 10 s poll, which is how
                           the original example serves (`flow.serve()`)
  verdict                  the issue's targets on 2 cores: Reconciliation -> Completed p50 <= 1 s,
                           kickoff -> Running p50 <= 2.5 s, 0 wrong outcomes with N = 50

Each measurement prints one JSON object on stdout; progress goes to stderr. Timestamps are the
server's (run start and end) against the events' `occurred`, all on this machine's clock.

    .venv/bin/python bench/bench_flow.py                                  # N = 50, 20 sequential files
    .venv/bin/python bench/bench_flow.py --files 10 --sequential 5 --reference 2
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack import pipeline_events as events
from devstack.flow_runs import FINAL_STATES, runs_by_kickoff, timestamp, wait_for_run
from devstack.flow_server import FlowServer
from devstack.proc import descendants, pss_kib
from devstack.processes import wait_until
from devstack.services import REPO_ROOT, PrefectServer
from prefect_flows.deployment import FlowSettings, same_deadlines

TARGETS = {"reconciliation_to_final_p50_s": 1.0, "kickoff_to_running_p50_s": 2.5, "wrong_outcomes": 0}
BATCH = 20  # events per request: well below the rate at which the server drops events


def emit(measurement: str, **fields: Any) -> dict[str, Any]:
    record = {"measurement": measurement, **fields}
    print(json.dumps(record), flush=True)
    return record


def progress(message: str) -> None:
    print(f"[bench_flow] {message}", file=sys.stderr, flush=True)


def spread(seconds: list[float]) -> dict[str, float]:
    """p50 and p95 (nearest rank) of a sample, in seconds."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return {
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(p95, 3),
        "max_s": round(ordered[-1], 3),
    }


def since(event: dict[str, Any], moment: str) -> float:
    return (timestamp(moment) - datetime.fromisoformat(event["occurred"])).total_seconds()


@dataclass(frozen=True)
class Planned:
    """A file of the concurrent phase and the outcome it is built to have."""

    file_name: str
    tracking_id: str
    sent: int
    kind: str  # matched, mismatched, invalid or overdue

    def stages(self) -> list[dict[str, Any]]:
        """Its stage events, stamped now; an overdue file never gets its Reconciliation."""
        received = {"mismatched": self.sent - 3, "invalid": f"{self.sent}x"}.get(self.kind, self.sent)
        posted = events.stages(self.file_name, self.tracking_id, self.sent, received)
        return posted[:3] if self.kind == "overdue" else posted

    def expected(self, posted: list[dict[str, Any]]) -> tuple[str, str]:
        """(state, pattern of the whole message) its run must end with."""
        sent = self.sent
        return {
            "matched": ("COMPLETED", re.escape(f"{sent} records sent, {sent} received")),
            "mismatched": ("FAILED", re.escape(f"sent {sent}, received {sent - 3} (3 missing)")),
            "invalid": (
                "FAILED",
                re.escape(
                    f"Reconciliation event {posted[-1]['id']} has totalRecordsReceived "
                    f"'{sent}x', which is not a whole number"
                ),
            ),
            "overdue": (
                "FAILED",
                r"overdue: waited .+ after kickoff, never saw Reconciliation \(deadline .+\)",
            ),
        }[self.kind]


class FlowBench:
    """A Prefect server and serve.py of the benchmark's own, and files driven through them."""

    def __init__(self, work_dir: Path, run_limit: int, deadline: float) -> None:
        self.work_dir = work_dir
        self.deadline = deadline
        self.server = PrefectServer(work_dir / "prefect", work_dir / "logs")
        self.run_limit = run_limit
        self.flow: FlowServer | None = None
        self.http = httpx.Client(timeout=60)

    @property
    def api(self) -> str:
        return self.server.api_url

    def start(self, poll_seconds: float) -> None:
        if self.flow:
            self.flow.stop()
        settings = same_deadlines(self.deadline)
        settings.update(FLOW_POLL_SECONDS=str(poll_seconds), FLOW_RUN_LIMIT=str(self.run_limit))
        self.flow = FlowServer(self.server, self.work_dir / "logs", settings=settings).start()
        self.deployment_id = self.flow.deployment()["id"]

    def post(self, posted: list[dict[str, Any]]) -> None:
        for start in range(0, len(posted), BATCH):
            events.post_events(self.api, posted[start : start + BATCH], client=self.http)

    def run(self, kickoff: dict[str, Any], states: set[str], timeout: float) -> dict[str, Any]:
        return wait_for_run(self.api, self.deployment_id, kickoff["id"], states, timeout)

    def count(self, kind: str, body: dict[str, Any]) -> int:
        """How many flow or task runs match `body` (POST /<kind>/count)."""
        response = self.http.post(f"{self.api}/{kind}/count", json=body)
        response.raise_for_status()
        return response.json()

    def stage_waits(self, scope: dict[str, Any], state: str) -> int:
        """How many `wait for <stage>` task runs are in `state` among the flow runs `scope` selects."""
        name_and_state = {"name": {"like_": "wait for"}, "state": {"type": {"any_": [state]}}}
        return self.count("task_runs", {**scope, "task_runs": name_and_state})

    def one_at_a_time(self, count: int, label: str) -> tuple[list[float], list[float]]:
        """(kickoff -> Running, Reconciliation -> final) for `count` files, one after the other."""
        to_running, to_final = [], []
        for n in range(count):
            file_name, tracking_id = f"{label}-{n}.csv", str(uuid.uuid4())
            kickoff = events.kickoff(file_name, tracking_id)
            self.post([kickoff])
            run = self.run(kickoff, {"RUNNING"}, 120)
            to_running.append(since(kickoff, run["start_time"]))
            self.post(events.stages(file_name, tracking_id, 1000 + n, 1000 + n)[:3])
            scope = {"flow_runs": {"id": {"any_": [run["id"]]}}}
            wait_until(
                lambda scope=scope: self.stage_waits(scope, "COMPLETED") == 3,
                60,
                "the first three stages to be seen",
            )
            reconciliation = events.reconciliation(tracking_id, 1000 + n)
            self.post([reconciliation])
            final = self.run(kickoff, FINAL_STATES, 60)
            if final["state_type"] != "COMPLETED":
                raise RuntimeError(
                    f"sequential file {n} ended {final['state_type']}: {final['state']['message']}"
                )
            to_final.append(since(reconciliation, final["end_time"]))
            progress(
                f"{label} file {n + 1}/{count}: running after {to_running[-1]:.2f} s, "
                f"completed {to_final[-1]:.2f} s after its Reconciliation"
            )
        return to_running, to_final

    def concurrent(self, count: int) -> dict[str, Any]:
        """`count` files in flight at once; memory while the runner is full; every outcome checked.

        Runs beyond FLOW_RUN_LIMIT wait as Scheduled and start as others finish, reading what
        already happened, so every file must still end right.
        """
        kinds = ("matched",) * 6 + ("mismatched",) * 2 + ("invalid", "overdue")
        files = [
            Planned(f"concurrent-{n}.csv", str(uuid.uuid4()), 500 + n, kinds[n % len(kinds)])
            for n in range(count)
        ]
        started = time.monotonic()
        kickoffs = {file.tracking_id: events.kickoff(file.file_name, file.tracking_id) for file in files}
        self.post(list(kickoffs.values()))
        waiting_runs = min(count, self.run_limit)
        progress(f"{count} kickoffs posted; waiting for {waiting_runs} runs to wait on their stages")
        mine = {"deployments": {"id": {"any_": [self.deployment_id]}}}
        running = {**mine, "flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}}
        wait_until(
            lambda: self.stage_waits(running, "RUNNING") == 4 * waiting_runs,
            60 + 5 * waiting_runs,
            f"{waiting_runs} runs to wait on their four stages",
            interval=2,
        )
        waiting_after = time.monotonic() - started
        runs_pss = [pss_kib(pid) for pid in descendants(self.flow.process.pid)]
        server_pids = [self.server.process.pid, *descendants(self.server.process.pid)]
        memory = emit(
            "memory_per_waiting_run",
            waiting_runs=waiting_runs,
            processes=len(runs_pss),
            mean_pss_mib=round(statistics.mean(runs_pss) / 1024, 1),
            max_pss_mib=round(max(runs_pss) / 1024, 1),
            runner_pss_mib=round(pss_kib(self.flow.process.pid) / 1024, 1),
            server_pss_mib=round(sum(pss_kib(pid) for pid in server_pids) / 1024, 1),
        )

        stages = {file.tracking_id: file.stages() for file in files}
        self.post([event for posted in stages.values() for event in posted[:3]])
        self.post([posted[3] for posted in stages.values() if len(posted) == 4])
        progress(
            f"stage events posted; waiting for {count} outcomes (overdue ones after {self.deadline:g} s)"
        )

        finished = {
            **mine,
            "flow_runs": {
                "name": {"like_": "concurrent-"},
                "state": {"type": {"any_": sorted(FINAL_STATES)}},
            },
        }
        wait_until(
            lambda: self.count("flow_runs", finished) == count,
            self.deadline + 60 + 3 * count,
            f"all {count} outcomes",
            interval=2,
        )
        runs = runs_by_kickoff(self.api, self.deployment_id)
        final = {tracking_id: runs[kickoff["id"]] for tracking_id, kickoff in kickoffs.items()}
        wrong, latencies = [], []
        for file in files:
            run, posted = final[file.tracking_id], stages[file.tracking_id]
            state, message = file.expected(posted)
            if run["state_type"] != state or not re.fullmatch(message, run["state"]["message"] or ""):
                wrong.append(
                    {
                        "file": file.file_name,
                        "expected": [state, message],
                        "got": [run["state_type"], run["state"]["message"]],
                    }
                )
            if len(posted) == 4:
                latencies.append(since(posted[3], run["end_time"]))
        return emit(
            "concurrent_files",
            files=count,
            run_limit=self.run_limit,
            wrong_outcomes=len(wrong),
            wrong=wrong[:5],
            outcomes={kind: sum(file.kind == kind for file in files) for kind in dict.fromkeys(kinds)},
            runner_full_after_s=round(waiting_after, 1),
            total_s=round(time.monotonic() - started, 1),
            reconciliation_to_final_under_load=spread(latencies),
            memory_mean_pss_mib=memory["mean_pss_mib"],
        )

    def stop(self) -> None:
        if self.flow:
            self.flow.stop()
        self.server.stop()
        self.http.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50, help="files in flight at once (N)")
    parser.add_argument(
        "--run-limit",
        type=int,
        default=FlowSettings().run_limit,
        help="FLOW_RUN_LIMIT: runs waiting at once (a SQLite Prefect server stalls above ~30)",
    )
    parser.add_argument("--sequential", type=int, default=20, help="files measured one at a time")
    parser.add_argument("--reference", type=int, default=5, help="files measured with the default 10 s poll")
    parser.add_argument(
        "--deadline",
        type=float,
        help="every stage's deadline in seconds (default 60 + 3 per waiting run: those runs must all "
        "be waiting before the stage events are sent, or they would rightly be overdue)",
    )
    args = parser.parse_args()
    args.deadline = args.deadline or 60 + 3 * min(args.files, args.run_limit)
    work_dir = REPO_ROOT / ".local" / "bench" / f"flow-{time.strftime('%Y%m%d-%H%M%S')}"
    bench = FlowBench(work_dir, args.run_limit, args.deadline)
    progress(f"starting a Prefect server and serve.py (logs in {work_dir / 'logs'})")
    try:
        bench.server.start()
        bench.start(poll_seconds=0.5)
        to_running, to_final = bench.one_at_a_time(args.sequential, "sequential")
        running = emit(
            "kickoff_to_running",
            files=args.sequential,
            poll_s=0.5,
            **spread(to_running),
            target_p50_s=TARGETS["kickoff_to_running_p50_s"],
        )
        final = emit(
            "reconciliation_to_final",
            files=args.sequential,
            **spread(to_final),
            target_p50_s=TARGETS["reconciliation_to_final_p50_s"],
        )
        concurrent = bench.concurrent(args.files)
        if args.reference:
            progress(f"reference: {args.reference} files with the runner's default 10 s poll")
            bench.start(poll_seconds=10)
            emit(
                "reference_default_poll",
                files=args.reference,
                poll_s=10,
                **spread(bench.one_at_a_time(args.reference, "reference")[0]),
            )
        emit(
            "verdict",
            kickoff_to_running_p50_ok=running["p50_s"] <= TARGETS["kickoff_to_running_p50_s"],
            reconciliation_to_final_p50_ok=final["p50_s"] <= TARGETS["reconciliation_to_final_p50_s"],
            concurrent_outcomes_ok=concurrent["wrong_outcomes"] == TARGETS["wrong_outcomes"]
            and args.files >= 50,
            files=args.files,
        )
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
