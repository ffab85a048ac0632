// The Function App in Azure: storage, monitoring, Key Vault, a Flex Consumption app and the Event
// Grid system topic its blob trigger listens to. `azd up` deploys it (azure.yaml); so does
// `az deployment sub create --location <region> --template-file infra/main.bicep --parameters ...`.
// The Event Grid subscription comes after the code (infra/blob-subscription.bicep, postdeploy hook).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd env name); seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Azure region for every resource; it must offer the Flex Consumption plan.')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of the person or pipeline deploying; gets data access to upload test files and read queues. Empty: none.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal'])
@description('Kind of principal `principalId` is: a person (User) or a CI identity (ServicePrincipal).')
param principalType string = 'User'

@description('Object id of the identity the mainframe uploads files with; gets Storage Blob Data Contributor on the incoming container only. Empty: none.')
param uploaderPrincipalId string = ''

@allowed(['User', 'ServicePrincipal', 'Group'])
@description('Kind of principal `uploaderPrincipalId` is.')
param uploaderPrincipalType string = 'ServicePrincipal'

@description('Email address that receives the alerts (dead-lettered or undeliverable blob events, poison queues). Empty: the alerts fire in Azure Monitor only.')
param alertEmail string = ''

@description('Resource group to create; default rg-<environmentName>.')
param resourceGroupName string = ''

@description('Function App name (globally unique); default func-<unique suffix>.')
param functionAppName string = ''

@description('Storage account name (3-24 lowercase letters and digits, globally unique); default st<unique suffix>.')
param storageAccountName string = ''

@description('Key Vault name (3-24 characters, globally unique); default kv-<unique suffix of the seed below>.')
param keyVaultName string = ''

@description('Changes the default Key Vault name: `azd down` leaves the vault soft-deleted with its name for 7 days, so the postdown hook sets a new seed (AZURE_KEY_VAULT_NAME_SEED).')
param keyVaultNameSeed string = ''

@description('Container the mainframe uploads files to; the blob trigger watches it.')
param incomingContainerName string = 'incoming'

@description('Queue the emitter writes record envelopes to, for the Java consumer.')
param recordsQueueName string = 'records'

@allowed(['zlib', 'none'])
@description('RECORDS_COMPRESSION: zlib compresses each records-queue message; none for consumers that cannot inflate.')
param recordsCompression string = 'zlib'

@description('Queue of work items between the blob trigger and the emitter.')
param emitQueueName string = 'emit-work'

@allowed(['true', 'false'])
@description('FIRST_LINE_IS_HEADER: true when each file\'s first line is a header, not a record.')
param firstLineIsHeader string = 'false'

@description('TRACKING_ID_METADATA_KEY: blob metadata key holding the file\'s trackingId.')
param trackingIdMetadataKey string = 'trackingId'

@description('SEND_CONCURRENCY: record envelopes in flight to the records queue at once.')
param sendConcurrency string = '16'

@description('WEBHOOK_TIMEOUT_SECONDS: timeout of one webhook request.')
param webhookTimeoutSeconds string = '10'

@description('WEBHOOK_ATTEMPTS: attempts per webhook call before the function fails and the host retries it.')
param webhookAttempts string = '5'

@description('WEBHOOK_BACKOFF_SECONDS: wait after the first failed webhook attempt; doubles per attempt.')
param webhookBackoffSeconds string = '1'

// Flex Consumption accepts 1-1000: learn.microsoft.com/azure/azure-functions/event-driven-scaling#limit-scale-out
@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to (Flex Consumption: 1-1000); each one posts to the webhooks, so a low value caps the load on Prefect.')
param maximumInstanceCount int = 40

@allowed([2048, 4096])
@description('Memory per instance in MB; the emitter streams blobs, so 2048 leaves room for wide records.')
param instanceMemoryMB int = 2048

@secure()
@minLength(1)
@description('AZURE_STORAGE_WEBHOOK_URL: where the blob trigger announces each file (Microsoft.Storage.BlobCreated).')
param azureStorageWebhookUrl string

@secure()
@description('AZURE_STORAGE_WEBHOOK_TOKEN: bearer token for that webhook; empty for none.')
param azureStorageWebhookToken string = ''

@secure()
@description('AZURE_STORAGE_WEBHOOK_SECRET: Standard Webhooks signing secret (whsec_...); empty for none.')
param azureStorageWebhookSecret string = ''

@secure()
@minLength(1)
@description('SUMMARY_WEBHOOK_URL: where the emitter posts each file\'s Summary (totalRecordsSent).')
param summaryWebhookUrl string

@secure()
@description('SUMMARY_WEBHOOK_TOKEN: bearer token for that webhook; empty for none.')
param summaryWebhookToken string = ''

@secure()
@description('SUMMARY_WEBHOOK_SECRET: Standard Webhooks signing secret (whsec_...); empty for none.')
param summaryWebhookSecret string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var appName = !empty(functionAppName) ? functionAppName : 'func-${resourceToken}'
// Flex Consumption pulls the app package from this container.
var packageContainerName = 'app-package-${take(appName, 32)}-${take(resourceToken, 7)}'
// Event Grid keeps here the blob events it could not deliver to the app within 24 h.
var deadLetterContainerName = 'deadletter'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module storage 'modules/storage.bicep' = {
  scope: rg
  name: 'storage'
  params: {
    name: !empty(storageAccountName) ? storageAccountName : 'st${resourceToken}'
    location: location
    tags: tags
    containerNames: [incomingContainerName, packageContainerName, deadLetterContainerName]
    queueNames: [recordsQueueName, emitQueueName]
  }
}

module monitoring 'modules/monitoring.bicep' = {
  scope: rg
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module vault 'modules/key-vault.bicep' = {
  scope: rg
  name: 'key-vault'
  params: {
    name: !empty(keyVaultName) ? keyVaultName : 'kv-${uniqueString(resourceToken, keyVaultNameSeed)}'
    location: location
    tags: tags
    // The app settings that come from Key Vault; empty values are left out. A secure object, so
    // the values stay out of the nested deployment's recorded parameters.
    secrets: {
      settings: [
        { name: 'AZURE_STORAGE_WEBHOOK_URL', value: azureStorageWebhookUrl }
        { name: 'AZURE_STORAGE_WEBHOOK_TOKEN', value: azureStorageWebhookToken }
        { name: 'AZURE_STORAGE_WEBHOOK_SECRET', value: azureStorageWebhookSecret }
        { name: 'SUMMARY_WEBHOOK_URL', value: summaryWebhookUrl }
        { name: 'SUMMARY_WEBHOOK_TOKEN', value: summaryWebhookToken }
        { name: 'SUMMARY_WEBHOOK_SECRET', value: summaryWebhookSecret }
      ]
    }
  }
}

module access 'modules/access.bicep' = {
  scope: rg
  name: 'access'
  params: {
    identityName: 'id-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    incomingContainerName: incomingContainerName
    deadLetterContainerName: deadLetterContainerName
    keyVaultName: vault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    userPrincipalId: principalId
    userPrincipalType: principalType
    uploaderPrincipalId: uploaderPrincipalId
    uploaderPrincipalType: uploaderPrincipalType
  }
}

module app 'modules/function-app.bicep' = {
  scope: rg
  name: 'function-app'
  params: {
    name: appName
    location: location
    tags: tags
    identityId: access.outputs.identityId
    identityClientId: access.outputs.identityClientId
    storageAccountName: storage.outputs.name
    packageContainerUrl: '${storage.outputs.blobEndpoint}${packageContainerName}'
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    // The settings file_relay/settings.py reads (tests/test_infra.py keeps both lists equal);
    // the webhook ones come from Key Vault (vault.secrets above), the platform's from the module.
    appSettings: [
      { name: 'STORAGE_CONNECTION', value: 'AzureWebJobsStorage' }
      { name: 'BLOB_TRIGGER_SOURCE', value: 'EventGrid' }
      { name: 'INCOMING_CONTAINER', value: incomingContainerName }
      { name: 'EMIT_QUEUE', value: emitQueueName }
      { name: 'RECORDS_QUEUE', value: recordsQueueName }
      { name: 'RECORDS_COMPRESSION', value: recordsCompression }
      { name: 'TRACKING_ID_METADATA_KEY', value: trackingIdMetadataKey }
      { name: 'FIRST_LINE_IS_HEADER', value: firstLineIsHeader }
      { name: 'SEND_CONCURRENCY', value: sendConcurrency }
      { name: 'WEBHOOK_TIMEOUT_SECONDS', value: webhookTimeoutSeconds }
      { name: 'WEBHOOK_ATTEMPTS', value: webhookAttempts }
      { name: 'WEBHOOK_BACKOFF_SECONDS', value: webhookBackoffSeconds }
      { name: 'STORAGE_ACCOUNT_RESOURCE_ID', value: storage.outputs.id }
    ]
    vaultSettings: vault.outputs.references
  }
}

module events 'modules/event-grid.bicep' = {
  scope: rg
  name: 'event-grid'
  params: {
    name: 'evgt-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deadLetterContainerName: deadLetterContainerName
  }
}

module alerts 'modules/alerts.bicep' = {
  scope: rg
  name: 'alerts'
  params: {
    location: location
    tags: tags
    workspaceId: monitoring.outputs.workspaceId
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: vault.outputs.name
    systemTopicName: events.outputs.name
    poisonQueueNames: ['${emitQueueName}-poison', 'webjobs-blobtrigger-poison']
    alertEmail: alertEmail
  }
}

// What docs/azure.md's next steps and the postdeploy hook use (azd stores them in its environment).
output AZURE_LOCATION string = location
output AZURE_SUBSCRIPTION_ID string = subscription().subscriptionId
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_FUNCTION_APP_URL string = app.outputs.url
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output AZURE_EVENT_GRID_TOPIC_NAME string = events.outputs.name
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output INCOMING_CONTAINER_NAME string = incomingContainerName
output DEADLETTER_CONTAINER_NAME string = deadLetterContainerName
output RECORDS_QUEUE_NAME string = recordsQueueName
