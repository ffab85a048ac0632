"""The Function App: two functions and their bindings. The logic lives in `file_relay`.

announce_file  blob trigger on <INCOMING_CONTAINER>/{name}: posts the BlobCreated event, queues a work item
emit_records   queue trigger on <EMIT_QUEUE>: streams that blob version's records, posts the Summary
"""

import logging

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from file_relay import announcer, emitter
from file_relay.settings import load_settings

# Bindings are fixed when the host indexes this file, so the settings are read now, with their
# defaults (a `%SETTING%` binding expression would have none); changing an app setting restarts the app.
settings = load_settings()

# The Azure SDK logs every HTTP request at INFO: thousands per file would bury the functions' own lines.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

app = func.FunctionApp()


@app.function_name("announce_file")
@app.blob_trigger(
    arg_name="incoming",
    path=f"{settings.incoming_container}/{{name}}",
    connection=settings.storage_connection,
    source=func.BlobSource(settings.blob_trigger_source),
)
@app.queue_output(
    arg_name="work_item", queue_name=settings.emit_queue, connection=settings.storage_connection
)
def announce_file(incoming: blob.BlobClient, work_item: func.Out[str]) -> None:
    """A file landed: announce it and queue its emission. The SDK-type binding reads no content."""
    work_item.set(announcer.announce(incoming, settings))


@app.function_name("emit_records")
@app.queue_trigger(arg_name="message", queue_name=settings.emit_queue, connection=settings.storage_connection)
def emit_records(message: func.QueueMessage) -> None:
    """Stream the work item's blob version to the records queue, then post the Summary."""
    emitter.emit(message.get_body(), settings)
