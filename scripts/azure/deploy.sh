#!/usr/bin/env bash
# Deploy Toygres to Azure: one resource group with the Function App (Flex Consumption), PostgreSQL
# Flexible Server (Entra-only, PgBouncer), AKS, storage, monitoring and the network (infra/bicep).
#
#   scripts/azure/deploy.sh --env dev --resource-group rg-toygres-dev --location swedencentral
#
# Steps, each safe to re-run (a second run changes nothing):
#   entra     the API's Entra app registration: app roles Toygres.Reader/Operator/Admin, scope
#             user_impersonation pre-authorized for the Azure CLI, service principal; the deployer
#             gets Toygres.Admin
#   infra     az group create + az deployment group create (or --what-if: show the changes, stop)
#   cluster   the instances' namespace and expandable storage class (az aks command invoke)
#   publish   func azure functionapp publish (the Flex plan's deployment container)
#   database  the identity's PostgreSQL role (pgaadauth_create_principal), `toygres migrate` over a
#             direct 5432 connection as the deployer, then the identity's privileges
#   smoke     GET /api/health with an Entra token
#
# No secret is ever put on a command line or printed: tokens travel in environment variables
# (PGPASSWORD) or on standard input (curl -H @-). docs/deploy.md explains every step.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ALL_STEPS="entra infra cluster publish database smoke"
AZURE_CLI_APP_ID="04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ADMIN_ROLE_ID="f032e2c7-f941-4e1d-baf9-d2e4999f37d4" # Toygres.Admin in infra/entra/api-application.json
PG_SCOPE_RESOURCE="oss-rdbms"

ENV_NAME="${AZURE_ENV_NAME:-}"
RESOURCE_GROUP="${AZURE_RESOURCE_GROUP:-}"
LOCATION="${AZURE_LOCATION:-}"
SUBSCRIPTION="${AZURE_SUBSCRIPTION_ID:-}"
CLIENT_IP="${TOYGRES_CLIENT_IP:-}"
POSTGRES_PRIVATE=false
WHAT_IF=false
AZD=false
STEPS="$ALL_STEPS"
CURRENT_STEP="start"

usage() {
    cat <<EOF
usage: $(basename "$0") --env NAME --resource-group RG --location REGION [options]

  --env NAME              short deployment name (dev, prod); part of every resource name
  --resource-group RG     resource group to create or update
  --location REGION       Azure region with Flex Consumption (az functionapp list-flexconsumption-locations)
  --subscription ID       subscription (default: the az CLI's current one)
  --postgres-private      PostgreSQL without a public endpoint (run this script from inside the VNet)
  --client-ip IP          public PostgreSQL: address allowed to connect for migrations (default: detected)
  --what-if               show what the deployment would change and stop
  --only STEPS            run only these steps, comma separated ($ALL_STEPS)
  --azd                   called by an azd hook: read deployment outputs from the environment
  -h, --help              this text
EOF
}

log() { printf '==> %s\n' "$*"; }

die() {
    printf 'deploy.sh: %s\n' "$1" >&2
    shift
    local line
    for line in "$@"; do
        printf '  %s\n' "$line" >&2
    done
    exit 1
}

# What to do when a step fails; printed by the ERR trap together with the failed command.
hint_for_step() {
    case "$1" in
    preflight) echo "Check 'az login' and 'az account show'; pass --subscription if the wrong one is current." ;;
    entra) echo "Creating the app registration needs rights in Microsoft Entra ID (Application Developer or an admin); ask one to run '--only entra'." ;;
    infra) echo "Read the deployment error above ('az deployment operation group list -g $RESOURCE_GROUP -n $(deployment_name)' has details); fix it, then re-run: finished resources are kept." ;;
    cluster) echo "az aks command invoke needs the 'Azure Kubernetes Service RBAC Cluster Admin' role the deployment grants the deployer; role assignments can take a few minutes to apply: re-run '--only cluster'." ;;
    publish) echo "Check Azure Functions Core Tools v4 ('func --version') and that you can publish to the app; re-run '--only publish'." ;;
    database) echo "The deployer must reach PostgreSQL on port 5432: with --postgres-private run from inside the virtual network; otherwise check the firewall rule for --client-ip. Re-run '--only database'." ;;
    smoke) echo "The app may still be starting: wait a minute and re-run '--only smoke'; then see 'Troubleshooting' in docs/deploy.md." ;;
    *) echo "See docs/deploy.md." ;;
    esac
}

on_error() {
    local status=$? command=$1
    trap - ERR
    printf '\ndeploy.sh: step "%s" failed (exit %s) at: %s\n' "$CURRENT_STEP" "$status" "$command" >&2
    printf '  what to do: %s\n' "$(hint_for_step "$CURRENT_STEP")" >&2
    exit "$status"
}
trap 'on_error "$BASH_COMMAND"' ERR

while [ $# -gt 0 ]; do
    case "$1" in
    --env) ENV_NAME="${2:?--env needs a value}"; shift 2 ;;
    --resource-group) RESOURCE_GROUP="${2:?--resource-group needs a value}"; shift 2 ;;
    --location) LOCATION="${2:?--location needs a value}"; shift 2 ;;
    --subscription) SUBSCRIPTION="${2:?--subscription needs a value}"; shift 2 ;;
    --client-ip) CLIENT_IP="${2:?--client-ip needs a value}"; shift 2 ;;
    --postgres-private) POSTGRES_PRIVATE=true; shift ;;
    --what-if) WHAT_IF=true; shift ;;
    --only) STEPS="${2:?--only needs a value}"; STEPS="${STEPS//,/ }"; shift 2 ;;
    --azd) AZD=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
    esac
done

for step in $STEPS; do
    case " $ALL_STEPS " in
    *" $step "*) ;;
    *) die "unknown step '$step'" "steps are: $ALL_STEPS" ;;
    esac
done
[ -n "$ENV_NAME" ] || die "--env is required (or AZURE_ENV_NAME)"
[ -n "$RESOURCE_GROUP" ] || die "--resource-group is required (or AZURE_RESOURCE_GROUP)"
case "$ENV_NAME" in
*[!a-z0-9-]* | "") die "--env must be lowercase letters, digits and '-': got '$ENV_NAME'" ;;
esac

want() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac }

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed" "$2"
}

deployment_name() { printf 'toygres-%s' "$ENV_NAME"; }
app_display_name() { printf 'toygres-api-%s' "$ENV_NAME"; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------------
# preflight: tools, login, subscription, who is deploying
# ---------------------------------------------------------------------------------------------
CURRENT_STEP=preflight
need az "Install the Azure CLI: https://learn.microsoft.com/cli/azure/install-azure-cli"
need python3 "Python 3.11+ is needed for the deployment outputs and 'toygres migrate'."
if want publish; then need func "Install Azure Functions Core Tools v4: npm install -g azure-functions-core-tools@4"; fi
if want database; then need psql "Install the PostgreSQL client (psql), e.g. apt-get install postgresql-client"; fi
if want smoke; then need curl "Install curl."; fi

if [ -n "$SUBSCRIPTION" ]; then
    az account set --subscription "$SUBSCRIPTION" ||
        die "cannot select subscription $SUBSCRIPTION" "Run 'az login' (or 'az account list') and check the id."
fi
SUBSCRIPTION_ID="$(az account show --query id -o tsv 2>/dev/null)" ||
    die "not logged in to Azure" "Run 'az login' (and 'az account set --subscription <id>')."
log "subscription $SUBSCRIPTION_ID, resource group $RESOURCE_GROUP, environment $ENV_NAME"

DEPLOYER_TYPE="$(az account show --query user.type -o tsv)"
if [ "$DEPLOYER_TYPE" = "servicePrincipal" ]; then
    deployer_app_id="$(az account show --query user.name -o tsv)"
    DEPLOYER_ID="$(az ad sp show --id "$deployer_app_id" --query id -o tsv)"
    DEPLOYER_NAME="$(az ad sp show --id "$deployer_app_id" --query displayName -o tsv)"
    DEPLOYER_PRINCIPAL_TYPE=ServicePrincipal
else
    DEPLOYER_ID="$(az ad signed-in-user show --query id -o tsv)"
    DEPLOYER_NAME="$(az ad signed-in-user show --query userPrincipalName -o tsv)"
    DEPLOYER_PRINCIPAL_TYPE=User
fi
log "deploying as $DEPLOYER_NAME ($DEPLOYER_PRINCIPAL_TYPE)"

# ---------------------------------------------------------------------------------------------
# entra: the API's app registration
# ---------------------------------------------------------------------------------------------
API_CLIENT_ID="${TOYGRES_API_CLIENT_ID:-}"

ensure_app_registration() {
    local name app_object_id sp_id assigned
    name="$(app_display_name)"
    API_CLIENT_ID="$(az ad app list --display-name "$name" --query "[0].appId" -o tsv)"
    if [ -z "$API_CLIENT_ID" ]; then
        log "creating the app registration $name"
        API_CLIENT_ID="$(az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg --query appId -o tsv)"
    else
        log "app registration $name exists ($API_CLIENT_ID)"
    fi
    app_object_id="$(az ad app show --id "$API_CLIENT_ID" --query id -o tsv)"
    # app roles, the user_impersonation scope pre-authorized for the Azure CLI, v2 access tokens
    az rest --method PATCH --url "https://graph.microsoft.com/v1.0/applications/$app_object_id" \
        --headers "Content-Type=application/json" --body "@$ROOT/infra/entra/api-application.json" -o none
    az ad app update --id "$API_CLIENT_ID" --identifier-uris "api://$API_CLIENT_ID"
    sp_id="$(az ad sp show --id "$API_CLIENT_ID" --query id -o tsv 2>/dev/null || true)"
    if [ -z "$sp_id" ]; then
        log "creating the service principal of $name"
        sp_id="$(az ad sp create --id "$API_CLIENT_ID" --query id -o tsv)"
    fi
    assigned="$(az rest --method GET --url "https://graph.microsoft.com/v1.0/servicePrincipals/$sp_id/appRoleAssignedTo" \
        --query "length(value[?principalId=='$DEPLOYER_ID' && appRoleId=='$ADMIN_ROLE_ID'])" -o tsv)"
    if [ "$assigned" = "0" ]; then
        log "granting $DEPLOYER_NAME the Toygres.Admin role"
        printf '{"principalId": "%s", "resourceId": "%s", "appRoleId": "%s"}' "$DEPLOYER_ID" "$sp_id" "$ADMIN_ROLE_ID" \
            >"$WORK/assignment.json"
        az rest --method POST --url "https://graph.microsoft.com/v1.0/servicePrincipals/$sp_id/appRoleAssignedTo" \
            --headers "Content-Type=application/json" --body "@$WORK/assignment.json" -o none
    fi
    if [ "$AZD" = true ]; then
        azd env set TOYGRES_API_CLIENT_ID "$API_CLIENT_ID"
        azd env set TOYGRES_DEPLOYER_ID "$DEPLOYER_ID"
        azd env set TOYGRES_DEPLOYER_NAME "$DEPLOYER_NAME"
        azd env set TOYGRES_DEPLOYER_TYPE "$DEPLOYER_PRINCIPAL_TYPE"
    fi
}

if want entra; then
    CURRENT_STEP=entra
    ensure_app_registration
elif [ -z "$API_CLIENT_ID" ]; then
    API_CLIENT_ID="$(az ad app list --display-name "$(app_display_name)" --query "[0].appId" -o tsv)"
    [ -n "$API_CLIENT_ID" ] || die "no app registration $(app_display_name) yet" "Run the entra step first (drop --only)."
fi

# ---------------------------------------------------------------------------------------------
# infra: resource group and the Bicep deployment
# ---------------------------------------------------------------------------------------------
OUTPUTS="$WORK/outputs.json"

detect_client_ip() {
    if [ "$POSTGRES_PRIVATE" = true ]; then
        return 0
    fi
    if [ -z "$CLIENT_IP" ]; then
        CLIENT_IP="$(curl -fsS --max-time 10 https://api.ipify.org || true)"
    fi
    case "$CLIENT_IP" in
    *[!0-9.]* | "") die "cannot tell this machine's public IPv4 address for the PostgreSQL firewall" \
        "Pass --client-ip <address>, or --postgres-private and run from inside the virtual network." ;;
    esac
}

if want infra; then
    CURRENT_STEP=infra
    [ -n "$LOCATION" ] || die "--location is required to deploy (or AZURE_LOCATION)"
    detect_client_ip
    # every ${...} placeholder of main.parameters.json (filled by azd) is set here explicitly
    params=(
        "environmentName=$ENV_NAME"
        "apiClientId=$API_CLIENT_ID"
        "deployerPrincipalId=$DEPLOYER_ID"
        "deployerPrincipalName=$DEPLOYER_NAME"
        "deployerPrincipalType=$DEPLOYER_PRINCIPAL_TYPE"
        "postgresPrivateAccess=$POSTGRES_PRIVATE"
        "postgresClientIp=$CLIENT_IP"
    )
    log "resource group $RESOURCE_GROUP in $LOCATION"
    az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --tags application=toygres "azd-env-name=$ENV_NAME" -o none
    template=(--resource-group "$RESOURCE_GROUP" --name "$(deployment_name)"
        --template-file "$ROOT/infra/bicep/main.bicep"
        --parameters "@$ROOT/infra/bicep/main.parameters.json" --parameters "${params[@]}")
    if [ "$WHAT_IF" = true ]; then
        log "what-if: the changes a deployment would make"
        az deployment group what-if "${template[@]}"
        exit 0
    fi
    log "deploying infra/bicep/main.bicep (10-20 minutes on a first run)"
    az deployment group create "${template[@]}" --query properties.outputs -o json >"$OUTPUTS"
fi

# Deployment outputs: from this run, from the last deployment, or (azd hooks) from the environment.
if [ ! -s "$OUTPUTS" ] && [ "$AZD" = false ]; then
    if want cluster || want publish || want database || want smoke; then
        CURRENT_STEP=infra
        az deployment group show --resource-group "$RESOURCE_GROUP" --name "$(deployment_name)" \
            --query properties.outputs -o json >"$OUTPUTS"
    fi
fi

output() {
    if [ "$AZD" = true ]; then
        local value="${!1:-}"
        [ -n "$value" ] || die "azd did not export the deployment output $1"
        printf '%s' "$value"
    else
        python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["value"], end="")' "$OUTPUTS" "$1"
    fi
}

# ---------------------------------------------------------------------------------------------
# cluster: namespace and storage class (cluster-scoped; the control plane may not create them)
# ---------------------------------------------------------------------------------------------
if want cluster; then
    CURRENT_STEP=cluster
    namespace="$(output INSTANCES_NAMESPACE)"
    storage_class="$(output STORAGE_CLASS)"
    cat >"$WORK/namespace.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
  labels:
    app.kubernetes.io/managed-by: toygres
EOF
    # Premium SSD through the Azure Disk CSI driver; allowVolumeExpansion lets instances grow their
    # volumes; WaitForFirstConsumer places each disk in the zone of the pod that uses it.
    cat >"$WORK/storage-class.yaml" <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $storage_class
provisioner: disk.csi.azure.com
parameters:
  skuName: Premium_LRS
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
EOF
    log "namespace $namespace and storage class $storage_class on $(output AKS_NAME)"
    exit_code="$(az aks command invoke --subscription "$(output AKS_SUBSCRIPTION_ID)" \
        --resource-group "$(output AKS_RESOURCE_GROUP)" --name "$(output AKS_NAME)" \
        --command "kubectl apply -f namespace.yaml -f storage-class.yaml" \
        --file "$WORK/namespace.yaml" --file "$WORK/storage-class.yaml" --query exitCode -o tsv)"
    [ "$exit_code" = "0" ] || die "kubectl apply in the cluster exited $exit_code" "$(hint_for_step cluster)"
fi

# ---------------------------------------------------------------------------------------------
# publish: the app package, to the Flex plan's deployment container
# ---------------------------------------------------------------------------------------------
if want publish; then
    CURRENT_STEP=publish
    app="$(output FUNCTION_APP_NAME)"
    log "publishing the Function App $app"
    (cd "$ROOT" && func azure functionapp publish "$app" --python)
fi

# ---------------------------------------------------------------------------------------------
# database: the identity's role, migrations, privileges
# ---------------------------------------------------------------------------------------------
if want database; then
    CURRENT_STEP=database
    identity="$(output IDENTITY_NAME)"
    export PGHOST PGPORT=5432 PGDATABASE PGUSER="$DEPLOYER_NAME" PGSSLMODE=require PGCONNECT_TIMEOUT=15
    PGHOST="$(output POSTGRES_HOST)"
    PGDATABASE="$(output POSTGRES_DATABASE)"
    # the deployer's Entra token is the password; libpq reads it from the environment
    PGPASSWORD="$(az account get-access-token --resource-type "$PG_SCOPE_RESOURCE" --query accessToken -o tsv)"
    export PGPASSWORD
    role_exists="$(psql -X -v ON_ERROR_STOP=1 -v "identity=$identity" -tA \
        -c "SELECT count(*) FROM pg_roles WHERE rolname = :'identity'")"
    if [ "$role_exists" = "0" ]; then
        log "creating the PostgreSQL role of $identity"
        psql -X -v ON_ERROR_STOP=1 -v "identity=$identity" -tA \
            -c "SELECT * FROM pgaadauth_create_principal(:'identity', false, false)"
    else
        log "PostgreSQL role $identity exists"
    fi
    log "applying migrations (direct connection, port 5432)"
    toygres_cli="$(command -v toygres || echo "$ROOT/.venv/bin/toygres")"
    [ -x "$toygres_cli" ] || die "the toygres CLI is not installed" "python3 -m venv .venv && .venv/bin/pip install -e . (in the repository)"
    TOYGRES_DATABASE_URL="postgresql://$PGUSER@$PGHOST:5432/$PGDATABASE?sslmode=require" "$toygres_cli" migrate
    log "granting $identity its privileges"
    psql -X -v ON_ERROR_STOP=1 -v "identity=$identity" -v engine_schema=durable -v cms_schema=toygres \
        -f "$ROOT/scripts/azure/grant-control-plane.sql"
    unset PGPASSWORD
fi

# ---------------------------------------------------------------------------------------------
# smoke: GET /api/health with a token for the API
# ---------------------------------------------------------------------------------------------
if want smoke; then
    CURRENT_STEP=smoke
    url="$(output API_BASE_URL)/health"
    token="$(az account get-access-token --scope "api://$API_CLIENT_ID/.default" --query accessToken -o tsv)"
    log "smoke test: GET $url"
    attempt=1
    until printf 'Authorization: Bearer %s\n' "$token" |
        curl -fsS --max-time 30 -H @- -o "$WORK/health.json" "$url"; do
        if [ "$attempt" -ge "${TOYGRES_SMOKE_ATTEMPTS:-10}" ]; then
            die "GET $url kept failing after $attempt attempts" "$(hint_for_step smoke)"
        fi
        attempt=$((attempt + 1))
        sleep "${TOYGRES_SMOKE_DELAY:-15}"
    done
    log "healthy: $(cat "$WORK/health.json")"
fi

CURRENT_STEP="finished"
log "done. API: $(output API_BASE_URL 2>/dev/null || echo '(run without --only to see it)')"
log "the Azure CLI app id for tokens: $AZURE_CLI_APP_ID; API app id: $API_CLIENT_ID (see docs/deploy.md)"
