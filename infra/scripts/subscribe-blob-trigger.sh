#!/bin/sh
# Subscribe the deployed blob trigger to the BlobCreated events of the incoming container
# (infra/blob-subscription.bicep). azd runs this after every deploy (azure.yaml: postdeploy;
# subscribe-blob-trigger.ps1 on Windows). After `func azure functionapp publish`, run it yourself
# with the provisioning outputs exported:
#   set -a; eval "$(azd env get-values)"; set +a; infra/scripts/subscribe-blob-trigger.sh
set -eu

for name in AZURE_SUBSCRIPTION_ID AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_STORAGE_ACCOUNT_NAME \
  AZURE_EVENT_GRID_TOPIC_NAME INCOMING_CONTAINER_NAME DEADLETTER_CONTAINER_NAME; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "$name is not set: provision first ('azd provision'), or export the outputs of infra/main.bicep." >&2
    exit 1
  fi
done
command -v az >/dev/null || { echo "The Azure CLI (az) is needed: https://aka.ms/azure-cli" >&2; exit 1; }

# az keeps its own login and default subscription, apart from azd's: name the subscription every time.
if ! app_id="$(az functionapp show --subscription "$AZURE_SUBSCRIPTION_ID" \
  --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" --query id --output tsv)"; then
  echo "az cannot see $AZURE_FUNCTION_APP_NAME in subscription $AZURE_SUBSCRIPTION_ID (its error is above):" >&2
  echo "Log az in to that subscription's tenant: az login --tenant ${AZURE_TENANT_ID:-<its tenant id>}" >&2
  exit 1
fi

# A first deploy can resolve the app's Key Vault references before its identity's role applies;
# Azure then passes the reference text and retries only within 24 h. Ask for a fresh resolution.
echo "Refreshing the Key Vault references of $AZURE_FUNCTION_APP_NAME..."
az rest --method post --output none \
  --url "$app_id/config/configreferences/appsettings/refresh?api-version=2022-03-01"

# The host creates the blobs_extension key when it first loads the Event Grid blob trigger, which
# can take a few minutes after a deploy. The key is only tested here, never printed.
echo "Waiting for $AZURE_FUNCTION_APP_NAME to create its blobs_extension key (up to 10 minutes)..."
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
shown=""
attempt=0
until key="$(az functionapp keys list --subscription "$AZURE_SUBSCRIPTION_ID" \
  --resource-group "$AZURE_RESOURCE_GROUP" --name "$AZURE_FUNCTION_APP_NAME" \
  --query systemKeys.blobs_extension --output tsv 2>"$errors")" && [ -n "$key" ]; do
  # While the host starts az may fail; say why once per new reason instead of hiding it.
  error="$(cat "$errors")"
  if [ -n "$error" ] && [ "$error" != "$shown" ]; then
    printf 'az functionapp keys list: %s\n' "$error" >&2
    shown="$error"
  fi
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 60 ]; then
    echo "No blobs_extension key after 10 minutes. Check that the code deployed and indexed:" >&2
    echo "  az functionapp function list --subscription $AZURE_SUBSCRIPTION_ID -g $AZURE_RESOURCE_GROUP -n $AZURE_FUNCTION_APP_NAME -o table" >&2
    echo "and the host's errors in Application Insights (the blob trigger needs BLOB_TRIGGER_SOURCE=EventGrid)." >&2
    exit 1
  fi
  sleep 10
done

echo "Subscribing the blob trigger to BlobCreated events of container '$INCOMING_CONTAINER_NAME'..."
az deployment group create \
  --subscription "$AZURE_SUBSCRIPTION_ID" \
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
