# Windows twin of use-webhooks-env.sh (azure.yaml: preprovision, windows). Copies the webhook
# settings from webhooks.env (written by `python -m webhooks provision`) into the current azd
# environment, where infra/main.parameters.json reads them. Only <PREFIX>_WEBHOOK_URL / _TOKEN /
# _SECRET lines are copied; values are never printed. Runs on PowerShell 7 and Windows PowerShell 5.1.
param([string]$EnvFile = (Join-Path $PSScriptRoot '..\..\webhooks.env'))
$ErrorActionPreference = 'Stop'

if (-not (Test-Path -LiteralPath $EnvFile -PathType Leaf)) {
    [Console]::Error.WriteLine("No ${EnvFile}: using the webhook values already in the azd environment.")
    [Console]::Error.WriteLine("Create it with 'python -m webhooks provision', or set each value: azd env set SUMMARY_WEBHOOK_URL https://...")
    exit 0
}
if (-not (Get-Command azd -ErrorAction SilentlyContinue)) {
    [Console]::Error.WriteLine('azd is needed: https://aka.ms/azd-install')
    exit 1
}

$copied = @()
foreach ($line in Get-Content -LiteralPath $EnvFile) {
    if ($line -cnotmatch '^[A-Z][^=]*_WEBHOOK_(URL|TOKEN|SECRET)=') { continue }
    $name, $value = $line -split '=', 2
    $value = $value.TrimEnd("`r")
    # dotenv writers may quote values: drop one pair of surrounding quotes.
    if ($value -match '^"(.*)"$' -or $value -match "^'(.*)'$") { $value = $Matches[1] }
    azd env set $name $value | Out-Null
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    $copied += $name
}

if ($copied.Count -eq 0) {
    [Console]::Error.WriteLine("$EnvFile has no *_WEBHOOK_URL/_TOKEN/_SECRET lines; nothing copied.")
} else {
    Write-Output "Copied from $EnvFile into the azd environment: $($copied -join ' ')"
}
