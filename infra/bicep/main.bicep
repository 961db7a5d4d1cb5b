// Toygres control plane on Azure, deployed into one resource group:
//   identity -> storage, monitoring, network -> PostgreSQL, AKS -> Function App -> role assignments.
// See docs/deploy.md (what gets created, the PgBouncer arithmetic) and infra/bicep/README.md.
targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@description('Short name of this deployment (dev, prod, ...); part of every resource name.')
@minLength(1)
@maxLength(20)
param environmentName string

@description('Azure region of every resource (must offer Flex Consumption).')
param location string = resourceGroup().location

@description('Tags for every resource.')
param tags object = {}

@description('Application (client) id of the Entra app registration of the API (deploy.sh creates it, with the app roles Toygres.Reader, Toygres.Operator, Toygres.Admin).')
@minLength(36)
@maxLength(36)
param apiClientId string

@description('Who validates API callers: jwt (the app validates Entra tokens itself; App Service Authentication also runs in front) or app-service (the app trusts X-MS-CLIENT-PRINCIPAL).')
@allowed([
  'jwt'
  'app-service'
])
param apiAuthMode string = 'jwt'

@description('Memory of one Function App instance in MB.')
@allowed([
  512
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Most Function App instances; with databasePoolSize it sets the PgBouncer client budget.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Connections per pool in one instance (two pools: metadata and engine).')
@minValue(2)
@maxValue(20)
param databasePoolSize int = 5

@description('PostgreSQL major version.')
@allowed([
  '15'
  '16'
  '17'
])
param postgresVersion string = '16'

@description('PostgreSQL compute SKU (General Purpose or Memory Optimized: the built-in PgBouncer does not run on Burstable).')
param postgresSkuName string = 'Standard_D2ds_v5'

@description('Tier of postgresSkuName.')
@allowed([
  'GeneralPurpose'
  'MemoryOptimized'
])
param postgresSkuTier string = 'GeneralPurpose'

@description('max_connections of postgresSkuName (the service default; docs/deploy.md has the table).')
@minValue(50)
@maxValue(5000)
param postgresMaxConnections int = 859

@description('Direct (port 5432) connections kept free for deploy.sh migrations and operators.')
@minValue(5)
@maxValue(500)
param directConnectionReserve int = 20

@description('Wanted PgBouncer server connections for the control plane (capped by what the server allows).')
@minValue(1)
@maxValue(4950)
param pgbouncerServerPoolSize int = 50

@description('PgBouncer client connections beyond the Function App budget (CLI, operators).')
@minValue(0)
@maxValue(1000)
param pgbouncerClientHeadroom int = 100

@description('PostgreSQL storage in GiB.')
@minValue(32)
@maxValue(16384)
param postgresStorageSizeGB int = 32

@description('Days of point-in-time restore.')
@minValue(7)
@maxValue(35)
param postgresBackupRetentionDays int = 7

@description('Zone-redundant high availability for PostgreSQL.')
param postgresZoneRedundantHa bool = false

@description('Network parameter: PostgreSQL gets private access in the shared virtual network (no public endpoint; deploy.sh must then run inside that network).')
param postgresPrivateAccess bool = false

@description('Public access only: the IPv4 address deploy.sh connects from to apply migrations; empty for none.')
param postgresClientIp string = ''

@description('Resource id of an existing AKS cluster to use instead of creating one (Entra + Azure RBAC, reachable from the Function App subnet); empty to create one.')
param existingAksClusterId string = ''

@description('Kubernetes version of a new cluster; empty for the region default.')
param aksKubernetesVersion string = ''

@description('VM size of the new cluster system node pool.')
param aksNodeVmSize string = 'Standard_D4ds_v5'

@description('Nodes of the new cluster system node pool (autoscaler minimum).')
@minValue(1)
@maxValue(100)
param aksNodeCount int = 2

@description('Autoscaler maximum of the new cluster system node pool.')
@minValue(1)
@maxValue(100)
param aksMaxNodeCount int = 5

@description('Private API server for a new cluster.')
param aksPrivateCluster bool = false

@description('Namespace of the instances (deploy.sh creates it; the control plane may act only inside it).')
param instancesNamespace string = 'toygres'

@description('Storage class of instance volumes, with allowVolumeExpansion (deploy.sh creates it from infra/k8s/storage-class.yaml).')
param storageClassName string = 'toygres-premium'

@description('Object id of the person or pipeline running deploy.sh: PostgreSQL Entra admin (migrations) and Kubernetes cluster admin (namespace, storage class); empty for none.')
param deployerPrincipalId string = ''

@description('UPN or display name of the deployer principal (its PostgreSQL role name).')
param deployerPrincipalName string = ''

@description('User, Group or ServicePrincipal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

// ---------------------------------------------------------------------------------------------
// Names and the connection budget
// ---------------------------------------------------------------------------------------------

var token = toLower(uniqueString(resourceGroup().id, environmentName))
var envName = toLower(environmentName)
var allTags = union(tags, {
  'azd-env-name': environmentName
  application: 'toygres'
})

var identityName = 'id-toygres-${envName}-${token}'
var storageName = 'st${take(token, 13)}'
var functionAppName = 'func-toygres-${envName}-${token}'
var deploymentContainerName = 'app-package-${take(token, 8)}'
var postgresName = 'psql-toygres-${envName}-${token}'
var newAksName = 'aks-toygres-${envName}-${token}'

// functions/config.py: the hint queues the triggers listen on
var hintQueues = [
  'orchestration-hints'
  'activity-hints'
]

var useExistingAks = !empty(existingAksClusterId)
var aksIdParts = split(useExistingAks ? existingAksClusterId : '/subscriptions/none/resourceGroups/none/providers/none/none/none', '/')
var aksSubscriptionId = useExistingAks ? aksIdParts[2] : subscription().subscriptionId
var aksResourceGroup = useExistingAks ? aksIdParts[4] : resourceGroup().name
var aksName = useExistingAks ? aksIdParts[8] : newAksName

// Every instance holds two pools of databasePoolSize connections to PgBouncer (client side);
// PgBouncer multiplexes them onto at most pgbouncerPoolSize server connections, which must fit in
// max_connections minus the 15 the service reserves minus the direct connections kept free.
var functionClientConnections = (maximumInstanceCount * 2) * databasePoolSize
var pgbouncerMaxClientConnections = functionClientConnections + pgbouncerClientHeadroom
var serverConnectionsAvailable = (postgresMaxConnections - 15) - directConnectionReserve
var pgbouncerPoolSize = min(pgbouncerServerPoolSize, serverConnectionsAvailable)

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: identityName
    location: location
    tags: allTags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    workspaceName: 'log-toygres-${envName}-${token}'
    appInsightsName: 'appi-toygres-${envName}-${token}'
    location: location
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageName
    location: location
    tags: allTags
    deploymentContainerName: deploymentContainerName
    queueNames: hintQueues
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  params: {
    name: 'vnet-toygres-${envName}-${token}'
    location: location
    tags: allTags
    postgresPrivateAccess: postgresPrivateAccess
    postgresDnsZoneName: '${postgresName}.private.postgres.database.azure.com'
  }
}

module postgres 'modules/postgres.bicep' = {
  name: 'postgres'
  params: {
    name: postgresName
    location: location
    tags: allTags
    version: postgresVersion
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    storageSizeGB: postgresStorageSizeGB
    backupRetentionDays: postgresBackupRetentionDays
    zoneRedundantHa: postgresZoneRedundantHa
    databaseName: 'toygres'
    identityPrincipalId: identity.outputs.principalId
    identityName: identity.outputs.name
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalName: deployerPrincipalName
    deployerPrincipalType: deployerPrincipalType
    pgbouncerPoolSize: pgbouncerPoolSize
    pgbouncerMaxClientConnections: pgbouncerMaxClientConnections
    privateAccess: postgresPrivateAccess
    postgresSubnetId: network.outputs.postgresSubnetId
    privateDnsZoneId: network.outputs.postgresDnsZoneId
    clientIpAddress: postgresClientIp
  }
}

module aks 'modules/aks.bicep' = if (!useExistingAks) {
  name: 'aks'
  params: {
    name: newAksName
    location: location
    tags: allTags
    vnetName: 'vnet-toygres-${envName}-${token}'
    subnetName: network.outputs.aksSubnetName
    kubernetesVersion: aksKubernetesVersion
    nodeVmSize: aksNodeVmSize
    nodeCount: aksNodeCount
    maxNodeCount: aksMaxNodeCount
    privateCluster: aksPrivateCluster
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
}

module aksAccess 'modules/aks-access.bicep' = {
  name: 'aks-access'
  scope: resourceGroup(aksSubscriptionId, aksResourceGroup)
  params: {
    clusterName: aksName
    namespace: instancesNamespace
    identityPrincipalId: identity.outputs.principalId
  }
  dependsOn: [
    aks
  ]
}

module appRoles 'modules/app-roles.bicep' = {
  name: 'app-roles'
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    identityPrincipalId: identity.outputs.principalId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'function-app'
  params: {
    name: functionAppName
    planName: 'plan-toygres-${envName}-${token}'
    location: location
    tags: allTags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    identityName: identity.outputs.name
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    appInsightsName: monitoring.outputs.appInsightsName
    subnetId: network.outputs.functionSubnetId
    subnetPrefix: network.outputs.functionSubnetPrefix
    instanceMemoryMB: functionInstanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    databasePoolSize: databasePoolSize
    postgresHost: postgres.outputs.fqdn
    databaseName: postgres.outputs.databaseName
    apiClientId: apiClientId
    apiAuthMode: apiAuthMode
    aksSubscriptionId: aksSubscriptionId
    aksResourceGroup: aksResourceGroup
    aksClusterName: aksName
    instancesNamespace: instancesNamespace
    storageClassName: storageClassName
  }
  dependsOn: [
    appRoles
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs (no secrets; UPPER_SNAKE so azd exports them to its environment and hooks)
// ---------------------------------------------------------------------------------------------

output API_BASE_URL string = 'https://${functionApp.outputs.defaultHostName}/api'
output FUNCTION_APP_NAME string = functionApp.outputs.name
output POSTGRES_HOST string = postgres.outputs.fqdn
output POSTGRES_DATABASE string = postgres.outputs.databaseName
output POSTGRES_PRIVATE_ACCESS bool = postgresPrivateAccess
output AKS_NAME string = aksName
output AKS_RESOURCE_GROUP string = aksResourceGroup
output AKS_SUBSCRIPTION_ID string = aksSubscriptionId
output INSTANCES_NAMESPACE string = instancesNamespace
output STORAGE_CLASS string = storageClassName
output IDENTITY_NAME string = identity.outputs.name
output IDENTITY_CLIENT_ID string = identity.outputs.clientId
output API_CLIENT_ID string = apiClientId
output PGBOUNCER_POOL_SIZE int = pgbouncerPoolSize
output PGBOUNCER_MAX_CLIENT_CONNECTIONS int = pgbouncerMaxClientConnections
