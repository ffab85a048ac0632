// The storage account: the app's host storage, the incoming files, the app package and the queues.
// Shared keys are off: everything reaches it with Entra ID (the app's managed identity).

@description('Storage account name.')
param name string
param location string
param tags object

@description('Blob containers to create.')
param containerNames array

@description('Queues to create.')
param queueNames array

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the mainframe uploads from on-premises and Flex Consumption apps without VNet integration have no fixed outbound IPs, so the network rule allows all; access needs Entra ID (shared keys off) over TLS 1.2.
  // checkov:skip=CKV_AZURE_59: public endpoint on purpose, as for CKV_AZURE_35: private endpoints need a VNet this template does not create.
  // checkov:skip=CKV_AZURE_206: incoming files are copies the mainframe can resend and records leave within minutes; geo-replication would double the storage price for nothing to recover.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  // Locally redundant: the files are copies the mainframe can resend, and GRS doubles the price.
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    // A file deleted by mistake can be restored for a week.
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in containerNames: {
    parent: blobs
    name: containerName
    properties: { publicAccess: 'None' }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queueName in queueNames: {
    parent: queueService
    name: queueName
  }
]

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
