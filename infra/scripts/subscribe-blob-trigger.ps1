# Windows twin of subscribe-blob-trigger.sh (azure.yaml: postdeploy, windows): subscribes the
# deployed blob trigger to the BlobCreated events of the incoming container
# (infra/blob-subscription.bicep). azd passes its environment's values as environment variables.
# Runs on PowerShell 7 and Windows PowerShell 5.1.
$ErrorActionPreference = 'Stop'

$required = @('AZURE_SUBSCRIPTION_ID', 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_STORAGE_ACCOUNT_NAME',
    'AZURE_EVENT_GRID_TOPIC_NAME', 'INCOMING_CONTAINER_NAME', 'DEADLETTER_CONTAINER_NAME')
foreach ($name in $required) {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        [Console]::Error.WriteLine("$name is not set: provision first ('azd provision'), or set the outputs of infra/main.bicep.")
        exit 1
    }
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    [Console]::Error.WriteLine('The Azure CLI (az) is needed: https://aka.ms/azure-cli')
    exit 1
}
$subscription = $env:AZURE_SUBSCRIPTION_ID
$group = $env:AZURE_RESOURCE_GROUP
$app = $env:AZURE_FUNCTION_APP_NAME

# az keeps its own login and default subscription, apart from azd's: name the subscription every time.
$appId = az functionapp show --subscription $subscription --resource-group $group --name $app --query id --output tsv
if ($LASTEXITCODE -ne 0) {
    $tenant = if ($env:AZURE_TENANT_ID) { $env:AZURE_TENANT_ID } else { '<its tenant id>' }
    [Console]::Error.WriteLine("az cannot see $app in subscription $subscription (its error is above):")
    [Console]::Error.WriteLine("Log az in to that subscription's tenant: az login --tenant $tenant")
    exit 1
}

# A first deploy can resolve the app's Key Vault references before its identity's role applies;
# Azure then passes the reference text and retries only within 24 h. Ask for a fresh resolution.
Write-Output "Refreshing the Key Vault references of $app..."
az rest --method post --output none `
    --url "$appId/config/configreferences/appsettings/refresh?api-version=2022-03-01"
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

# The host creates the blobs_extension key when it first loads the Event Grid blob trigger, which
# can take a few minutes after a deploy. The key is only tested here, never printed.
Write-Output "Waiting for $app to create its blobs_extension key (up to 10 minutes)..."
$shown = ''
for ($attempt = 1; ; $attempt++) {
    $errors = New-TemporaryFile
    # Windows PowerShell 5.1 turns a native command's redirected stderr into terminating errors.
    $ErrorActionPreference = 'Continue'
    $key = az functionapp keys list --subscription $subscription --resource-group $group --name $app `
        --query systemKeys.blobs_extension --output tsv 2> $errors
    $succeeded = $LASTEXITCODE -eq 0
    $ErrorActionPreference = 'Stop'
    $problem = Get-Content -Raw -LiteralPath $errors
    Remove-Item -LiteralPath $errors
    if ($succeeded -and $key) { break }
    # While the host starts az may fail; say why once per new reason instead of hiding it.
    if ($problem -and $problem -ne $shown) {
        [Console]::Error.WriteLine("az functionapp keys list: $problem")
        $shown = $problem
    }
    if ($attempt -ge 60) {
        [Console]::Error.WriteLine('No blobs_extension key after 10 minutes. Check that the code deployed and indexed:')
        [Console]::Error.WriteLine("  az functionapp function list --subscription $subscription -g $group -n $app -o table")
        [Console]::Error.WriteLine("and the host's errors in Application Insights (the blob trigger needs BLOB_TRIGGER_SOURCE=EventGrid).")
        exit 1
    }
    Start-Sleep -Seconds 10
}

Write-Output "Subscribing the blob trigger to BlobCreated events of container '$env:INCOMING_CONTAINER_NAME'..."
az deployment group create `
    --subscription $subscription `
    --resource-group $group `
    --name blob-trigger-subscription `
    --template-file (Join-Path $PSScriptRoot '..\blob-subscription.bicep') `
    --parameters `
        "functionAppName=$app" `
        "systemTopicName=$env:AZURE_EVENT_GRID_TOPIC_NAME" `
        "storageAccountName=$env:AZURE_STORAGE_ACCOUNT_NAME" `
        "containerName=$env:INCOMING_CONTAINER_NAME" `
        "deadLetterContainerName=$env:DEADLETTER_CONTAINER_NAME" `
    --output none
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Write-Output "Subscribed: files uploaded to '$env:INCOMING_CONTAINER_NAME' in $env:AZURE_STORAGE_ACCOUNT_NAME now trigger $app."
