"""docs/records-queue.md's Java snippet, run as written on real records-queue messages from Azurite."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import uuid

import pytest

from configuration import REPO_ROOT
from tests.relay_fixtures import decode_message

DOC = REPO_ROOT / "docs" / "records-queue.md"

CONSUMER = """
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.zip.InflaterInputStream;

public class Consumer {
%s
    /** Each line of stdin is a message as stored; each line of stdout is base64 of its envelope JSON. */
    public static void main(String[] args) throws IOException {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        for (String line; (line = in.readLine()) != null; ) {
            System.out.println(Base64.getEncoder().encodeToString(envelopeJson(line)));
        }
    }
}
"""


def java_snippet() -> str:
    [snippet] = re.findall(r"```java\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    return snippet


@pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime on this machine")
def test_the_java_snippet_reads_compressed_and_plain_messages(start_relay, tmp_path):
    messages = []
    for compression in ("zlib", "none"):
        relay = start_relay(RECORDS_COMPRESSION=compression)
        lines = [f'{n},"Jürgen",{"x" * (n % 50)}' for n in range(3000)]
        relay.upload("ledger.csv", ("\n".join(lines) + "\n").encode(), tracking_id=f"T-{uuid.uuid4()}")
        relay.announce("ledger.csv")
        relay.emit()
        messages += relay.messages()
    source = tmp_path / "Consumer.java"
    source.write_text(CONSUMER % java_snippet())

    run = subprocess.run(
        ["java", str(source)],
        input="\n".join(messages) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,  # the assertion below shows Java's error
    )

    assert run.returncode == 0, run.stderr
    decoded = [json.loads(base64.b64decode(line)) for line in run.stdout.splitlines()]
    assert decoded == [decode_message(message) for message in messages]
    assert {base64.b64decode(message)[:1] for message in messages} == {b"\x78", b"{"}
