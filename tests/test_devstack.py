"""The local stack's own parts: ports, process stop, and the services the other tests stand on."""

import socket

import httpx
import pytest
from azure.storage.queue import QueueClient

from devstack.supervision.processes import ManagedProcess, ServiceError, ensure_port_free, wait_until


def test_a_port_in_use_is_reported_with_the_service_that_needs_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port {port} .* in use; the gateway needs it"):
            ensure_port_free(port, "the gateway")


def test_stop_ends_the_process_and_its_children(tmp_path):
    process = ManagedProcess("sleeper", ["sh", "-c", "sleep 60 & sleep 60"], tmp_path / "sleeper.log").start()
    process.stop(timeout=5)
    assert not process.running()


def test_a_service_that_exits_while_starting_fails_with_its_log(tmp_path):
    process = ManagedProcess("broken", ["sh", "-c", "echo cannot open database; exit 3"], tmp_path / "b.log")
    process.start()
    with pytest.raises(ServiceError, match=r"(?s)exited with code 3.*cannot open database"):
        process.wait_healthy(lambda: False, timeout=10)


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(ServiceError, match=r"timed out after 0\.2 s waiting for the moon"):
        wait_until(lambda: False, 0.2, "the moon", interval=0.05)


def test_prefect_server_answers_health(prefect_server):
    assert httpx.get(f"{prefect_server.api_url}/health").json() is True


def test_azurite_queue_round_trip(azurite):
    queue = QueueClient.from_connection_string(azurite.connection_string, "devstack-check")
    queue.create_queue()
    queue.send_message("hello")
    assert [m.content for m in queue.receive_messages()] == ["hello"]


def test_azurite_keeps_its_queue_across_a_restart(start_azurite):
    azurite = start_azurite()
    QueueClient.from_connection_string(azurite.connection_string, "survives").create_queue()
    QueueClient.from_connection_string(azurite.connection_string, "survives").send_message("kept")
    azurite.stop()
    assert not azurite.process.running()
    azurite.start()
    messages = QueueClient.from_connection_string(azurite.connection_string, "survives").receive_messages()
    assert [m.content for m in messages] == ["kept"]
