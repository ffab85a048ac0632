// Key Vault for the webhook URLs, tokens and signing secrets: app settings only point at them.

@description('Key Vault name.')
param name string
param location string
param tags object

@secure()
@description('{settings: [{name, value}]}: app settings to keep here. Empty values are neither stored nor referenced.')
param secrets object

var stored = filter(secrets.settings, setting => !empty(setting.value))

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: App Service is no trusted service for Key Vault references, so without VNet integration the app reaches the vault over its public endpoint; reads need the Key Vault Secrets User role.
  // checkov:skip=CKV_AZURE_189: public endpoint on purpose, as for CKV_AZURE_109.
  // checkov:skip=CKV_AZURE_110: the secrets are webhook URLs and tokens that `python -m webhooks provision` re-creates; purge protection would block `azd down --purge` and reusing the environment name for the retention period.
  // checkov:skip=CKV_AZURE_42: soft delete is on (7 days); the check also demands purge protection, see CKV_AZURE_110.
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    // Access by Azure roles (access.bicep), not by vault access policies.
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Secret names allow letters, digits and dashes only: AZURE_STORAGE_WEBHOOK_URL -> AZURE-STORAGE-WEBHOOK-URL.
resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for setting in stored: {
    // checkov:skip=CKV_AZURE_41: Key Vault refuses to return an expired secret, so an expiry date would stop every webhook call on that day; rotate by re-provisioning the webhook and running `azd provision`.
    parent: vault
    name: replace(setting.name, '_', '-')
    properties: {
      value: setting.value
      contentType: 'text/plain'
    }
  }
]

output name string = vault.name

// One app setting per stored secret. The reference names the secret's version, so a changed value
// changes the app setting and the app restarts with it instead of waiting up to 24 h for a refresh.
output references array = [
  for (setting, i) in stored: {
    name: setting.name
    value: '@Microsoft.KeyVault(SecretUri=${secret[i].properties.secretUriWithVersion})'
  }
]
