// The Function App on the Flex Consumption plan, Python 3.11, running as its managed identity.

param name string
param location string
param tags object

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string
param identityClientId string
param storageAccountName string

@description('URL of the blob container Flex Consumption deploys the app package to.')
param packageContainerUrl string
param applicationInsightsConnectionString string
param maximumInstanceCount int
param instanceMemoryMB int

@description('The settings the code reads: [{name, value}].')
param appSettings array

@description('Settings that are Key Vault references: [{name, value}] from key-vault.bicep.')
param vaultSettings array

// The platform's settings. The host's storage connection is identity-based: AzureWebJobsStorage
// itself stays unset, <connection>__accountName/__credential/__clientId name the account and identity.
// FUNCTIONS_WORKER_RUNTIME must not be set on Flex Consumption: functionAppConfig.runtime says it.
var platformSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: storageAccountName }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: applicationInsightsConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption offers zone redundancy in some regions only and would reject the others; during a zone outage Event Grid retries deliveries for 24 h, so files are late, not lost.
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers blob events to the app's public webhook endpoint (authenticated by the blobs_extension key); the app serves nothing else.
  // checkov:skip=CKV_AZURE_17: Event Grid presents no client certificate; its deliveries carry the extension key instead.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales instances by itself (from zero, up to maximumInstanceCount); numberOfWorkers does not apply to it.
  // checkov:skip=CKV_AZURE_213: the app has no HTTP API to probe and Flex Consumption has no health check; a file whose stages stop arriving fails its Prefect flow run instead.
  name: name
  location: location
  // azd deploys the service named `api` in azure.yaml to the app carrying this tag.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(platformSettings, appSettings, vaultSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: packageContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
}

// No SCM (Kudu) or FTP basic-auth publishing: azd and az deploy with Entra ID
// (learn.microsoft.com/azure/app-service/configure-basic-auth-disable).
resource basicPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = [
  for policy in ['scm', 'ftp']: {
    parent: app
    name: policy
    properties: { allow: false }
  }
]

output name string = app.name
output url string = 'https://${app.properties.defaultHostName}'
