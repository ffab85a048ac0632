"""`python -m demo` as a user runs it (`make demo`, `make demo-once`), on free ports with its own data folder.

Every process the demo starts inherits a marker in its environment, so the tests can tell that
none is left once the demo has ended, however deep it was started (flow-run processes included).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from configuration import REPO_ROOT
from demo.scenarios import SCENARIOS, Observation
from demo.stack import DemoStack, Ports, StackOptions
from devstack.supervision.processes import ServiceError, ensure_port_free, wait_until

MARKER = "DEMO_TEST_RUN"


def unused_ports() -> Ports:
    """Free ports below Linux's ephemeral range (32768 and up).

    The demo starts its services one after the other: a port drawn from the ephemeral range, as
    free_port draws them, can meanwhile become the local end of some outgoing connection.
    """
    ports: list[int] = []
    while len(ports) < len(vars(Ports())):
        port = random.randrange(20000, 32000)
        try:
            ensure_port_free(port, "the demo under test")
        except ServiceError:
            continue
        if port not in ports:
            ports.append(port)
    return Ports(*ports)


def demo_options(tmp_path: Path) -> list[str]:
    ports = unused_ports()
    options = ["--data-dir", str(tmp_path / "demo"), "--env-file", str(tmp_path / "webhooks.env")]
    for name, port in vars(ports).items():
        options += [f"--{name}-port", str(port)]
    return options


def marked(token: str) -> dict[int, str]:
    """Every live process carrying `MARKER=token` in its environment, with its command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # not a process, or one that ended meanwhile
            continue
        if f"{MARKER}={token}".encode() in environ:
            found[int(entry.name)] = cmdline
    return found


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "demo", *args],
        cwd=REPO_ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.services  # starts the whole stack itself
def test_demo_once_plays_the_three_scenarios_and_each_ends_as_expected(tmp_path):
    token = uuid.uuid4().hex
    result = subprocess.run(
        [sys.executable, "-m", "demo", "--once", *demo_options(tmp_path)],
        cwd=REPO_ROOT,
        env={**os.environ, MARKER: token},
        capture_output=True,
        text=True,
        timeout=280,
    )

    output = result.stdout
    assert result.returncode == 0, output[-4000:] + result.stderr[-4000:]
    # The last line each scenario printed: its run's final state and message, read from the Prefect API.
    assert "  succeed   Completed: 20 records sent, 20 received\n" in output
    assert "  mismatch  Failed: sent 20, received 19 (1 missing)\n" in output
    waited = r"waited [0-9.]+ s after kickoff, never saw Reconciliation \(deadline 30.0 s\)"
    assert re.search(rf"\n  overdue   Failed: overdue: {waited}\n", output)
    assert "Scenarios, as the Prefect API shows them" in output
    assert output.count("/runs/flow-run/") == 3
    assert "Every scenario ended as expected." in output
    assert output.rstrip().endswith("Every service is stopped.")
    assert marked(token) == {}


@contextlib.contextmanager
def in_background(argv: list[str], log: Path, token: str) -> Iterator[subprocess.Popen]:
    """`argv` (the demo, or make) writing to `log`, marked with `token`; killed if a test leaves it running.

    A session of its own, so that ctrl_c() reaches every part of it as a terminal's Ctrl-C does.
    """
    with log.open("w") as out:
        process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env={**os.environ, MARKER: token},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:  # a test failed midway: stop it as a user would, then for sure
            with contextlib.suppress(subprocess.TimeoutExpired):
                ctrl_c(process)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ctrl_c(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=90)


@pytest.mark.services  # starts the whole stack itself
def test_ctrl_c_during_make_demo_stops_every_process_it_started_while_files_wait(tmp_path):
    token = uuid.uuid4().hex
    log = tmp_path / "make-demo.out"
    make_demo = ["make", "--no-print-directory", "demo", f"DEMO_ARGS={' '.join(demo_options(tmp_path))}"]
    with in_background(make_demo, log, token) as make:
        # A flow run is Running: serve.py follows a file (as a coroutine: no process of its own).
        wait_until(lambda: "flow run Running" in log.read_text(), 180, "a flow run of the demo to run")
        started = marked(token)
        ctrl_c(make)

    output = log.read_text()
    assert len(started) >= 7, started  # make, the demo and its 6 services
    assert "Interrupted." in output and "Every service is stopped." in output
    assert marked(token) == {}


@pytest.mark.services  # starts the whole stack itself
def test_a_file_of_ones_own_sent_as_the_demo_says_shows_its_outcome_in_the_demo(tmp_path):
    token = uuid.uuid4().hex
    log = tmp_path / "demo.out"
    with in_background([sys.executable, "-m", "demo", *demo_options(tmp_path)], log, token) as demo:
        next_steps = "Press Ctrl-C to stop every service."
        wait_until(lambda: next_steps in log.read_text(), 240, "the demo's next steps")
        # The command the demo printed, run as printed: 100 records, 2 of them malformed.
        printed = log.read_text().splitlines()
        command = next(line.strip() for line in printed if line.endswith("run --records 100 --malformed 2"))
        sent = subprocess.run(shlex.split(command), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        kickoff = re.search(r"kickoff sent for (\S+) \(trackingId (\S+)\)", sent.stdout)
        file_name, tracking_id = kickoff.groups()
        run = rf"  {re.escape(file_name)} \[{tracking_id}\] "
        outcome = run + r"Failed: sent 100, received 98 \(2 missing\)  http://\S+/runs/flow-run/"
        wait_until(
            lambda: re.search(outcome, log.read_text()), 60, f"{file_name}'s outcome in the demo's output"
        )
        ctrl_c(demo)

    assert "Every service is stopped." in log.read_text()
    assert marked(token) == {}


def test_a_busy_port_stops_the_demo_before_it_starts_anything(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        options = demo_options(tmp_path)
        options[options.index("--gateway-port") + 1] = str(port)

        result = run_demo(tmp_path, "--once", *options)

    assert result.returncode == 1
    assert (
        f"port {port} on 127.0.0.1 is already in use; the webhook gateway (--gateway-port) needs it"
        in result.stdout
    )
    assert not (tmp_path / "demo" / "prefect").exists()


def test_the_demo_keeps_a_webhooks_env_that_points_elsewhere(tmp_path):
    env_file = tmp_path / "webhooks.env"
    env_file.write_text("MAINFRAME_WEBHOOK_URL=https://api.prefect.cloud/hooks/abc\n")

    result = run_demo(tmp_path, "--once", *demo_options(tmp_path))

    assert result.returncode == 1
    assert "MAINFRAME_WEBHOOK_URL is on api.prefect.cloud" in result.stdout
    assert "--env-file .local/demo/webhooks.env" in result.stdout
    assert env_file.read_text() == "MAINFRAME_WEBHOOK_URL=https://api.prefect.cloud/hooks/abc\n"


FAKE_FUNC = '''#!{python}
"""Core Tools cannot be installed here: this records how it was started and answers as its host does."""
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
json.dump({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}}, open({record!r}, "w"))
class Status(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"state": "Running"}}).encode() if self.path == "/admin/host/status" else b"{{}}"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Status).serve_forever()
'''


def test_with_func_on_path_the_function_app_runs_under_func_start_with_the_app_settings(
    tmp_path, monkeypatch
):
    bin_dir, record = tmp_path / "bin", tmp_path / "func-started.json"
    bin_dir.mkdir()
    func = bin_dir / "func"
    func.write_text(FAKE_FUNC.format(python=sys.executable, record=str(record)))
    func.chmod(func.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    ports = unused_ports()
    options = StackOptions(tmp_path / "demo", tmp_path / "webhooks.env", ports, 30, "demo-overdue-*")
    stack = DemoStack(options, Console(file=io.StringIO()))

    stack.start_function_app()
    try:
        started = json.loads(record.read_text())
        status = httpx.get(f"http://127.0.0.1:{ports.functions}/admin/host/status").json()
    finally:
        stack.function_app.stop()

    assert started["argv"] == ["start", "--port", str(ports.functions)]
    assert started["cwd"] == str(REPO_ROOT)
    assert status == {"state": "Running"}
    env = started["env"]
    assert env["AzureWebJobsStorage"] == stack.azurite.connection_string
    assert f"BlobEndpoint=http://127.0.0.1:{ports.blob}/" in env["AzureWebJobsStorage"]
    assert env["AZURE_STORAGE_WEBHOOK_URL"] == f"http://127.0.0.1:{ports.gateway}/hooks/azure-storage"
    assert env["SUMMARY_WEBHOOK_URL"] == f"http://127.0.0.1:{ports.gateway}/hooks/summary"
    assert env["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


@pytest.mark.parametrize(
    ("state", "message", "as_expected"),
    [
        ("COMPLETED", "20 records sent, 20 received", True),
        ("COMPLETED", "20 records sent, 19 received", False),
        ("FAILED", "20 records sent, 20 received", False),
        ("RUNNING", "", False),
    ],
)
def test_an_outcome_counts_as_expected_only_with_the_expected_state_and_message(state, message, as_expected):
    succeed = next(scenario for scenario in SCENARIOS if scenario.name == "succeed")
    run = {"id": "r", "state_type": state, "state": {"message": message}, "end_time": None}
    observation = Observation(succeed, "demo-succeed-1", "demo-succeed-1.csv", kicked_off_at=None, run=run)

    assert observation.as_expected is as_expected
