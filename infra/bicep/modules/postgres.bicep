// PostgreSQL Flexible Server for the control plane's own database. Microsoft Entra authentication
// only (no password exists), the control plane's managed identity as Entra administrator, the
// built-in PgBouncer (port 6432, transaction pooling) sized by main.bicep (docs/deploy.md shows the
// arithmetic). Private access in the shared virtual network when postgresPrivateAccess is on.

@description('Server name (globally unique DNS label).')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('PostgreSQL major version.')
@allowed([
  '15'
  '16'
  '17'
])
param version string = '16'

@description('Compute SKU; PgBouncer needs General Purpose or Memory Optimized (not Burstable).')
param skuName string = 'Standard_D2ds_v5'

@description('Compute tier matching skuName.')
@allowed([
  'GeneralPurpose'
  'MemoryOptimized'
])
param skuTier string = 'GeneralPurpose'

@description('Storage size in GiB.')
@minValue(32)
@maxValue(16384)
param storageSizeGB int = 32

@description('Days of point-in-time restore.')
@minValue(7)
@maxValue(35)
param backupRetentionDays int = 7

@description('Zone-redundant high availability (a standby in another zone).')
param zoneRedundantHa bool = false

@description('Name of the database the control plane uses.')
param databaseName string = 'toygres'

@description('Object (principal) id of the control plane managed identity.')
param identityPrincipalId string

@description('Name of the control plane managed identity; its PostgreSQL role has this name.')
param identityName string

@description('Object id of the person or pipeline running deploy.sh (second Entra administrator); empty for none.')
param deployerPrincipalId string = ''

@description('Name (UPN or display name) of the deployer principal.')
param deployerPrincipalName string = ''

@description('User, Group or ServicePrincipal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

@description('Built-in PgBouncer: server connections per user/database pair.')
@minValue(1)
@maxValue(4950)
param pgbouncerPoolSize int

@description('Built-in PgBouncer: client connections it accepts.')
@minValue(1)
@maxValue(50000)
param pgbouncerMaxClientConnections int

@description('Private access: no public endpoint, the server lives in postgresSubnetId.')
param privateAccess bool = false

@description('Subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers (private access).')
param postgresSubnetId string = ''

@description('Private DNS zone linked to the virtual network (private access).')
param privateDnsZoneId string = ''

@description('Public access only: an IPv4 address allowed to connect (the machine running deploy.sh); empty for none.')
param clientIpAddress string = ''

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: version
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenant().tenantId
    }
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: zoneRedundantHa ? 'ZoneRedundant' : 'Disabled'
    }
    network: {
      publicNetworkAccess: privateAccess ? 'Disabled' : 'Enabled'
      delegatedSubnetResourceId: privateAccess ? postgresSubnetId : null
      privateDnsZoneArmResourceId: privateAccess ? privateDnsZoneId : null
    }
  }
}

// Server parameters are applied one at a time (the service rejects concurrent updates).
resource pgbouncerEnabled 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'pgbouncer.enabled'
  properties: {
    value: 'true'
    source: 'user-override'
  }
}

resource pgbouncerPoolMode 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'pgbouncer.pool_mode'
  properties: {
    value: 'transaction'
    source: 'user-override'
  }
  dependsOn: [
    pgbouncerEnabled
  ]
}

resource pgbouncerDefaultPoolSize 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'pgbouncer.default_pool_size'
  properties: {
    value: string(pgbouncerPoolSize)
    source: 'user-override'
  }
  dependsOn: [
    pgbouncerPoolMode
  ]
}

resource pgbouncerMaxClientConn 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'pgbouncer.max_client_conn'
  properties: {
    value: string(pgbouncerMaxClientConnections)
    source: 'user-override'
  }
  dependsOn: [
    pgbouncerDefaultPoolSize
  ]
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
  dependsOn: [
    pgbouncerMaxClientConn
  ]
}

// The control plane's identity administers its own database: it connects with Entra tokens only.
resource identityAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: server
  name: identityPrincipalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: identityName
    tenantId: tenant().tenantId
  }
  dependsOn: [
    database
  ]
}

// deploy.sh connects as the deployer to apply migrations and grant the identity its privileges.
resource deployerAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (!empty(deployerPrincipalId)) {
  parent: server
  name: empty(deployerPrincipalId) ? 'none' : deployerPrincipalId
  properties: {
    principalType: deployerPrincipalType
    principalName: deployerPrincipalName
    tenantId: tenant().tenantId
  }
  dependsOn: [
    identityAdmin
  ]
}

// Public access: Flex Consumption has no fixed outbound address, so the Function App reaches the
// public endpoint as an Azure service. Turn postgresPrivateAccess on to close the public endpoint.
resource allowAzureServices 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!privateAccess) {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
  dependsOn: [
    identityAdmin
  ]
}

resource allowClient 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!privateAccess && !empty(clientIpAddress)) {
  parent: server
  name: 'deploy-client'
  properties: {
    startIpAddress: clientIpAddress
    endIpAddress: clientIpAddress
  }
  dependsOn: [
    allowAzureServices
  ]
}

output name string = server.name
output fqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
