# Windows twin of renew-key-vault-name.sh (azure.yaml: postdown, windows). `azd down` without
# --purge leaves the vault soft-deleted for 7 days, and its name with it; a new seed gives the
# next provision a new Key Vault name (infra/main.bicep reads AZURE_KEY_VAULT_NAME_SEED).
$ErrorActionPreference = 'Stop'

if (-not (Get-Command azd -ErrorAction SilentlyContinue)) {
    [Console]::Error.WriteLine('azd is needed: https://aka.ms/azd-install')
    exit 1
}
$seed = (Get-Date).ToUniversalTime().ToString('yyyyMMddHHmmss')
azd env set AZURE_KEY_VAULT_NAME_SEED $seed | Out-Null
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Write-Output "The next 'azd provision' creates its Key Vault under a new name (AZURE_KEY_VAULT_NAME_SEED=$seed);"
Write-Output 'a vault deleted without --purge stays recoverable for 7 days: az keyvault list-deleted -o table'
