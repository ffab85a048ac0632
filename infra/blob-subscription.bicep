// The Event Grid subscription that hands the incoming container's BlobCreated events to the blob
// trigger. It needs the running app (its blobs_extension key, its answer to Event Grid's validation
// handshake), so infra/scripts/subscribe-blob-trigger.sh deploys it after the code:
//   az deployment group create -g <group> --template-file infra/blob-subscription.bicep \
//     --parameters functionAppName=<app> systemTopicName=<topic> storageAccountName=<account> \
//                  containerName=<incoming> deadLetterContainerName=<deadletter>
targetScope = 'resourceGroup'

param functionAppName string
param systemTopicName string
param storageAccountName string

@description('Container whose new blobs trigger the app.')
param containerName string

@description('Container for events Event Grid could not deliver within 24 h.')
param deadLetterContainerName string

@description('Name of the blob trigger function in function_app.py.')
param functionName string = 'announce_file'

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource host 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: app
  name: 'default'
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: 'blob-trigger'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        // The key stays inside Azure Resource Manager: endpointUrl is write-only.
        endpointUrl: 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${host.listKeys().systemKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${containerName}/blobs/'
    }
    // Retry for a day (the app may be redeploying or failing), then keep the event, never drop it.
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}
