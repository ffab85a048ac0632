// The Function App's managed identity and everything it, the deployer and the mainframe may do.

param identityName string
param location string
param tags object
param storageAccountName string

@description('The container files arrive in: the only one the deployer and the mainframe may write to.')
param incomingContainerName string

@description('The container of dead-lettered blob events, which the deployer may read.')
param deadLetterContainerName string
param keyVaultName string
param applicationInsightsName string

@description('Object id of the deployer to grant test-upload and queue-read access; empty for none.')
param userPrincipalId string
param userPrincipalType string

@description('Object id of the identity the mainframe uploads with; empty for none.')
param uploaderPrincipalId string
param uploaderPrincipalType string

// Built-in role ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageQueueDataReader: '19e7f393-937e-4f77-808e-94535e297925'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource incoming 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobs
  name: incomingContainerName
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobs
  name: deadLetterContainerName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// The host keeps its state in blobs and the trigger reads the incoming files (Blob Data Owner);
// the emit queue, the records queue and the poison queues need Queue Data Contributor.
resource appStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in [roles.storageBlobDataOwner, roles.storageQueueDataContributor]: {
    name: guid(storage.id, identity.id, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

// Key Vault references in app settings resolve with this identity (keyVaultReferenceIdentity).
resource appVaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appTelemetryRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Writers of files get the incoming container only: account-wide, Blob Data Contributor could read
// azure-webjobs-secrets (the function keys, the blobs_extension key) and replace the app package.
var writers = [
  { principalId: userPrincipalId, principalType: userPrincipalType }
  { principalId: uploaderPrincipalId, principalType: uploaderPrincipalType }
]
var uploaders = filter(writers, writer => !empty(writer.principalId))

resource uploaderRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for uploader in uploaders: {
    name: guid(incoming.id, uploader.principalId, roles.storageBlobDataContributor)
    scope: incoming
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
      principalId: uploader.principalId
      principalType: uploader.principalType
    }
  }
]

// The deployer reads the events Event Grid could not deliver.
resource userDeadLetterRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(deadLetters.id, userPrincipalId, roles.storageBlobDataReader)
  scope: deadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

// The deployer peeks at the records and poison queues (docs/azure.md: verify the deployment); queues
// hold no secrets, so reading is account-wide.
resource userQueueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(storage.id, userPrincipalId, roles.storageQueueDataReader)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataReader)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

output identityId string = identity.id
output identityClientId string = identity.properties.clientId
