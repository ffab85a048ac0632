"""function_app.py indexes as the Functions host indexes it: its bindings and the language worker's checks."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from configuration import REPO_ROOT as REPO
from file_relay.settings import SETTINGS

INDEXER = REPO / ".venv-py313" / "bin" / "python"
needs_indexer = pytest.mark.skipif(
    not INDEXER.exists(),
    reason="the language worker's indexer (azure-functions-runtime) needs Python 3.13: install python3.13, "
    "then `make install` builds .venv-py313",
)

DEFAULT_BINDINGS = {
    "announce_file": [
        {
            "direction": "OUT",
            "type": "queue",
            "name": "work_item",
            "queueName": "emit-work",
            "connection": "AzureWebJobsStorage",
        },
        {
            "direction": "IN",
            "type": "blobTrigger",
            "name": "incoming",
            "path": "incoming/{name}",
            "connection": "AzureWebJobsStorage",
            "source": "LogsAndContainerScan",
        },
    ],
    "emit_records": [
        {
            "direction": "IN",
            "type": "queueTrigger",
            "name": "message",
            "queueName": "emit-work",
            "connection": "AzureWebJobsStorage",
        },
    ],
}


def indexed_app(monkeypatch: pytest.MonkeyPatch, **settings: str) -> dict[str, dict]:
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    sys.modules.pop("function_app", None)
    app = importlib.import_module("function_app").app
    return {f.get_function_name(): json.loads(f.get_function_json()) for f in app.get_functions()}


def worker_env() -> dict[str, str]:
    names = {setting.name for setting in SETTINGS}
    return {
        name: value
        for name, value in os.environ.items()
        if name not in names and not name.startswith("PYTHON")
    }


def run_worker_indexer(app_dir: Path) -> subprocess.CompletedProcess[str]:
    script = REPO / "tests" / "worker_index.py"
    return subprocess.run(
        [str(INDEXER), str(script), str(app_dir)],
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=120,
    )


def test_the_app_registers_two_functions_with_these_bindings_by_default(monkeypatch):
    functions = indexed_app(monkeypatch)

    assert {name: f["bindings"] for name, f in functions.items()} == DEFAULT_BINDINGS
    assert all(f["scriptFile"] == "function_app.py" for f in functions.values())


def test_binding_settings_set_the_trigger_path_queue_connection_and_source(monkeypatch):
    functions = indexed_app(
        monkeypatch,
        INCOMING_CONTAINER="landing",
        EMIT_QUEUE="to-emit",
        STORAGE_CONNECTION="FILES",
        BLOB_TRIGGER_SOURCE="EventGrid",
    )

    output, trigger = functions["announce_file"]["bindings"]
    assert (trigger["path"], trigger["connection"], trigger["source"]) == (
        "landing/{name}",
        "FILES",
        "EventGrid",
    )
    assert (output["queueName"], output["connection"]) == ("to-emit", "FILES")
    [queue_trigger] = functions["emit_records"]["bindings"]
    assert (queue_trigger["queueName"], queue_trigger["connection"]) == ("to-emit", "FILES")


@needs_indexer
def test_the_language_workers_indexer_accepts_the_app_and_defers_the_blob_binding():
    result = run_worker_indexer(REPO)

    assert result.returncode == 0, result.stderr
    functions = {f["name"]: f for f in json.loads(result.stdout.splitlines()[-1])["functions"]}
    announce, emit = functions["announce_file"], functions["emit_records"]
    raw = {binding["name"]: binding for binding in announce["raw_bindings"]}
    assert raw["incoming"]["type"] == "blobTrigger"
    assert raw["incoming"]["properties"] == {"SupportsDeferredBinding": True}
    assert raw["work_item"]["properties"] == {"SupportsDeferredBinding": False}
    assert announce["deferred_bindings"] is True
    assert announce["inputs"] == {"incoming": "azurefunctions.extensions.bindings.blob.blobClient.BlobClient"}
    assert announce["outputs"] == {"work_item": "<class 'str'>"}
    assert emit["raw_bindings"] == DEFAULT_BINDINGS["emit_records"]
    assert emit["inputs"] == {"message": "azure.functions._queue.QueueMessage"}


@needs_indexer
def test_the_language_workers_indexer_rejects_a_parameter_the_bindings_do_not_name(tmp_path):
    source = (REPO / "function_app.py").read_text()
    broken = source.replace('arg_name="incoming"', 'arg_name="arrived"')
    assert broken != source
    (tmp_path / "function_app.py").write_text(broken)
    for package in ("configuration", "file_relay"):  # what the Function App deploys beside function_app.py
        shutil.copytree(REPO / package, tmp_path / package)

    result = run_worker_indexer(tmp_path)

    assert result.returncode != 0
    assert "parameters are declared in Python but not in the function definition" in result.stderr
    assert "'incoming'" in result.stderr
