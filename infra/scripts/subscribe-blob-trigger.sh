#!/bin/sh
# Subscribe the deployed blob trigger to the BlobCreated events of the incoming container
# (infra/blob-subscription.bicep). azd runs this after every deploy (azure.yaml: postdeploy).
# After `func azure functionapp publish`, run it yourself with the provisioning outputs exported:
#   set -a; eval "$(azd env get-values)"; set +a; infra/scripts/subscribe-blob-trigger.sh
set -eu

for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_STORAGE_ACCOUNT_NAME \
  AZURE_EVENT_GRID_TOPIC_NAME INCOMING_CONTAINER_NAME DEADLETTER_CONTAINER_NAME; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "$name is not set: provision first ('azd provision'), or export the outputs of infra/main.bicep." >&2
    exit 1
  fi
done
command -v az >/dev/null || { echo "The Azure CLI (az) is needed: https://aka.ms/azure-cli" >&2; exit 1; }

# The host creates the blobs_extension key when it first loads the Event Grid blob trigger, which
# can take a few minutes after a deploy. The key is only tested here, never printed.
echo "Waiting for $AZURE_FUNCTION_APP_NAME to create its blobs_extension key (up to 10 minutes)..."
attempt=0
until [ -n "$(az functionapp keys list --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
  --query systemKeys.blobs_extension --output tsv 2>/dev/null)" ]; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 60 ]; then
    echo "No blobs_extension key after 10 minutes. Check that the code deployed and indexed:" >&2
    echo "  az functionapp function list -g $AZURE_RESOURCE_GROUP -n $AZURE_FUNCTION_APP_NAME -o table" >&2
    echo "and the host's errors in Application Insights (the blob trigger needs BLOB_TRIGGER_SOURCE=EventGrid)." >&2
    exit 1
  fi
  sleep 10
done

echo "Subscribing the blob trigger to BlobCreated events of container '$INCOMING_CONTAINER_NAME'..."
az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name blob-trigger-subscription \
  --template-file "$(dirname "$0")/../blob-subscription.bicep" \
  --parameters \
    functionAppName="$AZURE_FUNCTION_APP_NAME" \
    systemTopicName="$AZURE_EVENT_GRID_TOPIC_NAME" \
    storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
    containerName="$INCOMING_CONTAINER_NAME" \
    deadLetterContainerName="$DEADLETTER_CONTAINER_NAME" \
  --output none
echo "Subscribed: files uploaded to '$INCOMING_CONTAINER_NAME' in $AZURE_STORAGE_ACCOUNT_NAME now trigger $AZURE_FUNCTION_APP_NAME."
