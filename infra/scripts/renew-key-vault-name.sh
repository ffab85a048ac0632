#!/bin/sh
# Give the next provision a new Key Vault name. `azd down` without --purge leaves the vault
# soft-deleted for 7 days, and its name with it, so creating a vault of that name again fails.
# azd runs this after `azd down` (azure.yaml: postdown; renew-key-vault-name.ps1 on Windows);
# infra/main.bicep derives the vault's default name from AZURE_KEY_VAULT_NAME_SEED.
set -eu

command -v azd >/dev/null || { echo "azd is needed: https://aka.ms/azd-install" >&2; exit 1; }
seed="$(date -u +%Y%m%d%H%M%S)"
azd env set AZURE_KEY_VAULT_NAME_SEED "$seed" >/dev/null
echo "The next 'azd provision' creates its Key Vault under a new name (AZURE_KEY_VAULT_NAME_SEED=$seed);"
echo "a vault deleted without --purge stays recoverable for 7 days: az keyvault list-deleted -o table"
