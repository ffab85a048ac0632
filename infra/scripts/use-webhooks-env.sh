#!/bin/sh
# Copy the webhook settings from webhooks.env (written by `python -m webhooks provision`) into the
# current azd environment, where infra/main.parameters.json reads them. azd runs this before every
# provision (azure.yaml: preprovision); run it yourself to check what it would copy.
# Only <PREFIX>_WEBHOOK_URL / _TOKEN / _SECRET lines are copied; values are never printed.
set -eu

env_file="${1:-$(dirname "$0")/../../webhooks.env}"

if [ ! -f "$env_file" ]; then
  echo "No $env_file: using the webhook values already in the azd environment." >&2
  echo "Create it with 'python -m webhooks provision', or set each value: azd env set SUMMARY_WEBHOOK_URL https://..." >&2
  exit 0
fi
command -v azd >/dev/null || { echo "azd is needed: https://aka.ms/azd-install" >&2; exit 1; }

copied=""
cr="$(printf '\r')"
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    [A-Z]*_WEBHOOK_URL=* | [A-Z]*_WEBHOOK_TOKEN=* | [A-Z]*_WEBHOOK_SECRET=*) ;;
    *) continue ;;
  esac
  name="${line%%=*}"
  value="${line#*=}"
  value="${value%"$cr"}"
  # dotenv writers may quote values: drop one pair of surrounding quotes.
  case "$value" in
    \"*\") value="${value#\"}"; value="${value%\"}" ;;
    \'*\') value="${value#\'}"; value="${value%\'}" ;;
  esac
  azd env set "$name" "$value" >/dev/null
  copied="$copied $name"
done < "$env_file"

if [ -z "$copied" ]; then
  echo "$env_file has no *_WEBHOOK_URL/_TOKEN/_SECRET lines; nothing copied." >&2
else
  echo "Copied from $env_file into the azd environment:$copied"
fi
