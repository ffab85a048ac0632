"""The original Prefect Cloud example's request bodies, shared by the template and gateway tests."""

TRACKING_ID = "aaa89264-c79c-11eb-b8bc-0242ac140007"


def blob_created(
    url: str = "https://account.blob.core.windows.net/incoming/example-file.csv",
    grid_id: str = "831e1650-001e-001b-66ab-eeb76e069631",
) -> dict:
    """An Event Grid BlobCreated event as Azure sends it (one element of the delivered array)."""
    return {
        "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/account",
        "subject": "/blobServices/default/containers/incoming/blobs/example-file.csv",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2024-05-01T12:00:00.0000000Z",
        "id": grid_id,
        "data": {
            "api": "PutBlob",
            "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
            "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
            "eTag": "0x8D4BCC2E4835CD0",
            "contentType": "text/csv",
            "contentLength": 524288,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": "00000000000004420000000000028963",
            "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


EXAMPLES = [
    (
        "mainframe",
        {
            "event_name": "kickoff",
            "file_name": "example-file-fail.csv",
            "stage": "on-prem",
            "trackingId": TRACKING_ID,
        },
    ),
    (
        "mainframe",
        {
            "event_name": "transfer",
            "file_name": "example-file-fail.csv",
            "stage": "distributed",
            "trackingId": TRACKING_ID,
        },
    ),
    ("azure-storage", [blob_created()]),
    ("summary", {"totalRecordsSent": 123, "trackingId": TRACKING_ID, "fileName": "example-file-fail.csv"}),
    ("reconciliation", {"totalRecordsReceived": 123, "trackingId": TRACKING_ID}),
]
