// What tells an operator that a file went astray: Key Vault's audit log and Event Grid's failed
// deliveries in Log Analytics, and alerts when blob events are dead-lettered, dropped or failing,
// or when the host moves a file's work to a poison queue (docs/azure.md: Alerts).

param location string
param tags object
param workspaceId string
param applicationInsightsName string
param keyVaultName string
param systemTopicName string

@description('The poison queues whose arrivals alert: <EMIT_QUEUE>-poison and webjobs-blobtrigger-poison.')
param poisonQueueNames array

@description('Where the alerts are emailed; empty: they fire in Azure Monitor only.')
param alertEmail string

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

// Who read or changed which secret, and who was refused.
resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'audit', enabled: true }]
  }
}

// Each failed delivery of a blob event to the app, with the reason (app down, handshake refused, 4xx).
resource topicDeliveryFailures 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'delivery-failures-to-log-analytics'
  scope: topic
  properties: {
    workspaceId: workspaceId
    logs: [{ category: 'DeliveryFailures', enabled: true }]
  }
}

resource operators 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-file-relay'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'filerelay'
    enabled: true
    emailReceivers: [{ name: 'operators', emailAddress: alertEmail, useCommonAlertSchema: true }]
  }
}

var actionGroupIds = empty(alertEmail) ? [] : [operators.id]

var topicAlerts = [
  {
    name: 'blob-events-dead-lettered'
    metric: 'DeadLetteredCount'
    severity: 1
    description: 'Event Grid gave up delivering a BlobCreated event to the app after 24 h: the file was never announced. The event is in the deadletter container; upload the file again once the app runs.'
  }
  {
    name: 'blob-events-dropped'
    metric: 'DroppedEventCount'
    severity: 1
    description: 'Event Grid dropped a BlobCreated event (the app answered 400/401/403/413): the file was never announced. See the DeliveryFailures log of the system topic.'
  }
  {
    name: 'blob-event-deliveries-failing'
    metric: 'DeliveryAttemptFailCount'
    severity: 2
    description: 'Event Grid cannot deliver BlobCreated events to the app and is retrying: the app is down, redeploying or refusing the handshake. See the DeliveryFailures log of the system topic.'
  }
]

resource topicMetricAlerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [
  for alert in topicAlerts: {
    name: alert.name
    location: 'global'
    tags: tags
    properties: {
      description: alert.description
      severity: alert.severity
      enabled: true
      scopes: [topic.id]
      evaluationFrequency: 'PT5M'
      windowSize: 'PT15M'
      criteria: {
        'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
        allOf: [
          {
            name: alert.metric
            criterionType: 'StaticThresholdCriterion'
            metricNamespace: 'Microsoft.EventGrid/systemTopics'
            metricName: alert.metric
            operator: 'GreaterThan'
            threshold: 0
            timeAggregation: 'Total'
          }
        ]
      }
      actions: [for id in actionGroupIds: { actionGroupId: id }]
    }
  }
]

// The host logs this warning (WebJobs QueueProcessor.CopyMessageToPoisonQueueAsync) each time it
// moves a message to a poison queue; Azure Monitor has no per-queue message count to watch instead.
var poisonQuery = 'traces | where message startswith "Message has reached MaxDequeueCount" | extend queue = extract("Moving message to queue \'([^\']+)\'", 1, message) | where queue in (dynamic(${string(poisonQueueNames)}))'

resource poisonAlert 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'file-work-poisoned'
  location: location
  tags: tags
  properties: {
    displayName: 'A file went to a poison queue'
    description: 'The host gave up on a file: webjobs-blobtrigger-poison holds blobs whose announcement failed (a file without trackingId metadata ends there), the emit poison queue work items whose records were not all sent. docs/azure.md lists the failed files by trackingId.'
    severity: 1
    enabled: true
    scopes: [insights.id]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: poisonQuery
          timeAggregation: 'Count'
          dimensions: [{ name: 'queue', operator: 'Include', values: ['*'] }]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: actionGroupIds }
  }
}
