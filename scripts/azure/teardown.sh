#!/usr/bin/env bash
# Delete a Toygres deployment: the resource group (every resource deploy.sh created in it, the
# instances' disks included) and, with --delete-app-registration, the API's Entra app registration.
#
#   scripts/azure/teardown.sh --env dev --resource-group rg-toygres-dev --yes
#
# Safe to re-run: whatever is already gone is reported and skipped. An existing AKS cluster used
# through existingAksClusterId lives in another resource group and is left alone (only the role
# assignments in it remain; docs/deploy.md shows how to remove them).
set -Eeuo pipefail

ENV_NAME="${AZURE_ENV_NAME:-}"
RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-}"
SUBSCRIPTION="${AZURE_SUBSCRIPTION_ID:-}"
YES=false
DELETE_APP=false
WAIT=true

usage() {
    cat <<EOF
usage: $(basename "$0") --env NAME --resource-group RG [--yes] [--delete-app-registration] [--no-wait]

  --env NAME                  the name given to deploy.sh
  --resource-group RG         the resource group to delete
  --subscription ID           subscription (default: the az CLI's current one)
  --yes                       do not ask (required without a terminal)
  --delete-app-registration   also delete the app registration toygres-api-NAME (and its role assignments)
  --no-wait                   return once Azure accepted the deletion
EOF
}

die() {
    printf 'teardown.sh: %s\n' "$1" >&2
    shift
    local line
    for line in "$@"; do printf '  %s\n' "$line" >&2; done
    exit 1
}

on_error() {
    local status=$?
    trap - ERR
    printf 'teardown.sh: failed (exit %s) at: %s\n' "$status" "$1" >&2
    printf '  what to do: read the error above, fix it, and re-run: whatever is already deleted is skipped.\n' >&2
    exit "$status"
}
trap 'on_error "$BASH_COMMAND"' ERR

while [ $# -gt 0 ]; do
    case "$1" in
    --env) ENV_NAME="${2:?--env needs a value}"; shift 2 ;;
    --resource-group) RESOURCE_GROUP="${2:?--resource-group needs a value}"; shift 2 ;;
    --subscription) SUBSCRIPTION="${2:?--subscription needs a value}"; shift 2 ;;
    --yes) YES=true; shift ;;
    --delete-app-registration) DELETE_APP=true; shift ;;
    --no-wait) WAIT=false; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
    esac
done
[ -n "$ENV_NAME" ] || die "--env is required"
[ -n "$RESOURCE_GROUP" ] || die "--resource-group is required"
command -v az >/dev/null 2>&1 || die "'az' is not installed" "Install the Azure CLI."

if [ -n "$SUBSCRIPTION" ]; then
    az account set --subscription "$SUBSCRIPTION" || die "cannot select subscription $SUBSCRIPTION"
fi
subscription_id="$(az account show --query id -o tsv 2>/dev/null)" || die "not logged in to Azure" "Run 'az login'."

if [ "$YES" != true ]; then
    [ -t 0 ] || die "refusing to delete without --yes (no terminal to ask on)"
    printf 'Delete resource group %s in subscription %s, with every instance and its data? [y/N] ' \
        "$RESOURCE_GROUP" "$subscription_id"
    read -r answer
    case "$answer" in y | Y | yes) ;; *) die "nothing deleted" ;; esac
fi

if [ "$(az group exists --name "$RESOURCE_GROUP" -o tsv)" = "true" ]; then
    echo "==> deleting resource group $RESOURCE_GROUP (10-20 minutes)"
    if [ "$WAIT" = true ]; then
        az group delete --name "$RESOURCE_GROUP" --yes
    else
        az group delete --name "$RESOURCE_GROUP" --yes --no-wait
    fi
else
    echo "==> resource group $RESOURCE_GROUP does not exist: nothing to delete"
fi

if [ "$DELETE_APP" = true ]; then
    app_id="$(az ad app list --display-name "toygres-api-$ENV_NAME" --query "[0].appId" -o tsv)"
    if [ -n "$app_id" ]; then
        echo "==> deleting app registration toygres-api-$ENV_NAME ($app_id)"
        az ad app delete --id "$app_id"
    else
        echo "==> app registration toygres-api-$ENV_NAME does not exist"
    fi
fi
echo "==> done"
