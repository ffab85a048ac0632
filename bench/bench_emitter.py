"""Emitter throughput and memory on Azurite, beside a plain streamed download and the classic InputStream.

    .venv/bin/python bench/bench_emitter.py                     # 100 MB and 1 GB (the issue's sizes)
    .venv/bin/python bench/bench_emitter.py --sizes 20MB,100MB  # smaller, quicker

Starts its own Azurite (data in a temporary directory, removed at the end), writes each blob once
(CSV-like records of ~80 bytes, progress on stderr), then measures on the same blob, each in its
own subprocess so that peak RSS belongs to one approach alone:

  download      download_blob().chunks() in 4 MiB requests, bytes discarded: the limit
  inputstream   the whole blob in memory, as func.InputStream holds it, then split into lines: the
                common approach
  emitter-zlib  file_relay.emitter.emit with RECORDS_COMPRESSION=zlib (the default): stream, split,
                pack, compress and send every message with SEND_CONCURRENCY in flight, then the
                final envelope and the Summary (to a local 204 server)
  emitter-none  the same with RECORDS_COMPRESSION=none: one uncompressed envelope per message
  pipeline      the emitter's own work without sending (stream, split, pack, compress, base64), to
                show whether it or the queue bounds the emitter

Every approach uses the emitter's storage client (4 MiB requests). `cpu_s` is the CPU time of
the approach's process (all threads) and `azurite_cpu_s` Azurite's while that process ran:
Azurite serves the download and takes every message on one core, so where `azurite_cpu_s` nears
`seconds`, Azurite is the bound; where `cpu_s` does, the emitter's own process is. Prints one JSON object
per measurement on stdout, then one per size comparing the emitter with the issue's targets: at
least 60% of the download's MB/s, and peak RSS under 150 MiB for 1 GB.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.storage.blob import BlobBlock, BlobClient, BlobServiceClient
from azure.storage.queue import QueueServiceClient

from devstack.services import Azurite
from devstack.supervision.process_stats import cpu_seconds
from file_relay.emitter import READ_AHEAD, blob_chunks, emit, keep_freed_buffers, read_ahead
from file_relay.envelopes import MAX_ENVELOPE_BYTES, EnvelopePacker
from file_relay.records import RecordSplitter
from file_relay.settings import load_settings
from file_relay.storage import StorageAccount
from file_relay.work_item import WorkItem

CONTAINER = "bench"
BLOCK_BYTES = 8 * 1024 * 1024
APPROACHES = ("download", "inputstream", "emitter-zlib", "emitter-none", "pipeline")
TARGET_SHARE = 0.6
TARGET_PEAK_RSS_MIB = 150


def parse_size(text: str) -> int:
    for unit, factor in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if text.upper().endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


def record_block(first: int, size: int) -> tuple[bytes, int]:
    """CSV lines numbered from `first`, at most `size` bytes in all; and how many lines."""
    lines: list[str] = []
    total, n = 0, first
    while True:
        amount = f"{n % 99991:08d}.{n % 100:02d}"
        line = f'{n:010d},ACME CORPORATION,2024-01-31,{amount},EUR,"memo, {n % 7}",{"x" * (n % 30)}\n'
        if total + len(line) > size:
            return "".join(lines).encode(), n - first
        lines.append(line)
        total += len(line)
        n += 1


def write_blob(blob: BlobClient, size: int) -> None:
    """Upload `size` bytes of records in 8 MiB blocks, with progress on stderr."""
    blocks: list[BlobBlock] = []
    written, records, started = 0, 0, time.monotonic()
    while written < size:
        data, count = record_block(records, min(BLOCK_BYTES, size - written))
        if not data:
            break
        blocks.append(BlobBlock(f"{len(blocks):08d}"))
        blob.stage_block(blocks[-1].id, data)
        written, records = written + len(data), records + count
        if len(blocks) % 16 == 0 or written >= size:
            print(
                f"  writing {blob.blob_name}: {written / size:5.1%} ({written >> 20} MiB, "
                f"{time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    blob.commit_block_list(blocks)


def work_item(blob: BlobClient) -> WorkItem:
    properties = blob.get_blob_properties()
    return WorkItem(CONTAINER, blob.blob_name, properties.etag.strip('"'), "BENCH", properties.size)


def summary_receiver() -> ThreadingHTTPServer:
    """A loopback server answering 204, for the emitter's Summary."""

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def measure(approach: str, connection: str, blob_name: str) -> dict:
    """Run one approach in this process; everything it needs is set up before the clock starts."""
    blob = StorageAccount("BENCH", {"BENCH": connection}).blob(CONTAINER, blob_name)
    item = work_item(blob)
    os.environ.update(
        BENCH_STORAGE=connection,
        STORAGE_CONNECTION="BENCH_STORAGE",
        RECORDS_QUEUE=f"bench-{uuid.uuid4().hex[:12]}",
        RECORDS_COMPRESSION=approach.removeprefix("emitter-") if approach.startswith("emitter") else "zlib",
        SUMMARY_WEBHOOK_URL=f"http://127.0.0.1:{summary_receiver().server_port}/summary",
    )
    settings = load_settings()
    result: dict[str, Any] = {"bytes": item.content_length, "records": None}
    started, cpu_started = time.perf_counter(), time.process_time()
    if approach == "download":
        for _ in blob.download_blob().chunks():
            pass
    elif approach == "inputstream":
        data = blob.download_blob().readall()  # the host reads the whole blob and hands it over
        text = func.blob.InputStream(data=data, name=blob_name, length=len(data)).read().decode()
        del data
        result["records"] = len(text.splitlines())
        del text
    elif approach.startswith("emitter"):
        emission = emit(item.to_json(), settings)
        assert emission is not None, "the benchmark's blob was superseded while it was emitted"
        result.update(records=emission.records, messages=emission.envelopes + 1)
    elif approach == "pipeline":
        keep_freed_buffers()
        packer = EnvelopePacker(item.tracking_id, item.blob_name, item.etag)
        splitter = RecordSplitter(False, MAX_ENVELOPE_BYTES)
        for body in packer.pack(splitter.split(read_ahead(blob_chunks(blob, item), READ_AHEAD))):
            base64.b64encode(body)
        result.update(records=packer.records, messages=packer.envelopes + 1)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started

    result.update(
        seconds=round(seconds, 3), cpu_s=round(cpu, 2), mb_per_s=round(result["bytes"] / seconds / 1e6, 1)
    )
    if result["records"]:
        result["records_per_s"] = round(result["records"] / seconds)
    if "messages" in result:
        result["messages_per_s"] = round(result["messages"] / seconds)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return {"approach": approach, "blob": blob_name, **result}


def compare(name: str, results: dict[str, dict]) -> dict:
    download = results["download"]["mb_per_s"]
    share = {a: round(results[a]["mb_per_s"] / download, 2) for a in APPROACHES if a != "download"}
    emitter = results["emitter-zlib"]
    return {
        "comparison": name,
        "download_mb_per_s": download,
        "share_of_download": share,
        "target_share": TARGET_SHARE,
        "meets_share_target": share["emitter-zlib"] >= TARGET_SHARE,
        "emitter_peak_rss_mib": emitter["peak_rss_mib"],
        "target_peak_rss_mib": TARGET_PEAK_RSS_MIB,
        "meets_rss_target": emitter["peak_rss_mib"] < TARGET_PEAK_RSS_MIB,
        "inputstream_peak_rss_mib": results["inputstream"]["peak_rss_mib"],
        "messages": {a: results[a]["messages"] for a in ("emitter-zlib", "emitter-none")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100MB,1GB", help="comma-separated blob sizes (default 100MB,1GB)")
    parser.add_argument("--child", choices=APPROACHES, help=argparse.SUPPRESS)
    parser.add_argument("--connection", help=argparse.SUPPRESS)
    parser.add_argument("--blob", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.connection, args.blob)), flush=True)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench-azurite-") as data_dir:
        azurite = Azurite(Path(data_dir) / "data", Path(data_dir) / "logs").start()
        try:
            service = BlobServiceClient.from_connection_string(azurite.connection_string)
            queues = QueueServiceClient.from_connection_string(azurite.connection_string)
            service.create_container(CONTAINER)
            assert azurite.process is not None  # started above
            azurite_pid = azurite.process.pid
            for text in args.sizes.split(","):
                name = f"records-{text.strip()}.csv"
                write_blob(service.get_blob_client(CONTAINER, name), parse_size(text.strip()))
                results = {}
                for approach in APPROACHES:
                    print(f"  measuring {approach} on {name}", file=sys.stderr, flush=True)
                    argv = [sys.executable, __file__, "--child", approach]
                    argv += ["--connection", azurite.connection_string, "--blob", name]
                    azurite_cpu = cpu_seconds(azurite_pid)
                    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
                    results[approach] = json.loads(output)
                    results[approach]["azurite_cpu_s"] = round(cpu_seconds(azurite_pid) - azurite_cpu, 1)
                    print(json.dumps(results[approach]), flush=True)
                    for queue in queues.list_queues(name_starts_with="bench-"):
                        queues.delete_queue(queue.name)
                print(json.dumps(compare(name, results)), flush=True)
                service.get_blob_client(CONTAINER, name).delete_blob()
        finally:
            azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
