// The control plane: a Linux Python Function App on the Flex Consumption plan (FC1), integrated
// with the shared virtual network, running as the user-assigned identity for everything (host
// storage, deployment package, telemetry, PostgreSQL tokens, AKS), with App Service Authentication
// (Microsoft Entra ID) in front of the API. Every app setting the code needs in Azure is in
// `appSettings` below; tests/infra checks them against functions/config.py AZURE_APP_SETTINGS.

@description('Function App name (also its host name).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

@description('Name of the user-assigned managed identity (its PostgreSQL role name).')
param identityName string

@description('Storage account of the host (AzureWebJobsStorage) and the hint queues.')
param storageAccountName string

@description('URL of the blob container the Flex plan deploys the app package from.')
param deploymentContainerUrl string

@description('Application Insights component (local auth off).')
param appInsightsName string

@description('Subnet delegated to Microsoft.App/environments for VNet integration.')
param subnetId string

@description('Address range of that subnet: every instance\'s NetworkPolicy admits it (health checks, backups).')
param subnetPrefix string

@description('Memory of one instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances the app scales out to (the PgBouncer client budget depends on it).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Connections per pool (metadata and engine) in one instance: TOYGRES_FUNCTIONS_POOL_SIZE.')
@minValue(2)
@maxValue(20)
param databasePoolSize int = 5

@description('Host name of the PostgreSQL server.')
param postgresHost string

@description('Database of the control plane.')
param databaseName string = 'toygres'

@description('Application (client) id of the Entra app registration of the API.')
param apiClientId string

@description('Who validates callers: jwt (the app validates Entra tokens) or app-service (the app trusts X-MS-CLIENT-PRINCIPAL from App Service Authentication).')
@allowed([
  'jwt'
  'app-service'
])
param apiAuthMode string = 'jwt'

@description('Subscription of the AKS cluster.')
param aksSubscriptionId string

@description('Resource group of the AKS cluster.')
param aksResourceGroup string

@description('AKS cluster name.')
param aksClusterName string

@description('Namespace of the instances.')
param instancesNamespace string

@description('Storage class of instance volumes (allows volume expansion).')
param storageClassName string

var loginEndpoint = environment().authentication.loginEndpoint
var tenantId = tenant().tenantId
var issuer = '${loginEndpoint}${tenantId}/v2.0'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// PgBouncer (port 6432) in transaction mode; no password: the app presents Entra tokens.
var databaseUrl = 'postgresql://${identityName}@${postgresHost}:6432/${databaseName}?sslmode=require'

var appSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  TOYGRES_DATABASE_URL: databaseUrl
  TOYGRES_DATABASE_AUTH: 'entra'
  TOYGRES_DATABASE_POOLER: 'transaction'
  TOYGRES_MIGRATE_ON_START: 'false'
  TOYGRES_FUNCTIONS_POOL_SIZE: string(databasePoolSize)
  TOYGRES_AUTH__MODE: apiAuthMode
  TOYGRES_AUTH__ISSUER: issuer
  TOYGRES_AUTH__AUDIENCE: apiClientId
  TOYGRES_AUTH__JWKS_URL: '${loginEndpoint}${tenantId}/discovery/v2.0/keys'
  TOYGRES_LOCAL_RUNTIME_ENABLED: 'false'
  TOYGRES_DEFAULT_RUNTIME: 'kubernetes'
  TOYGRES_KUBERNETES__AKS_SUBSCRIPTION_ID: aksSubscriptionId
  TOYGRES_KUBERNETES__AKS_RESOURCE_GROUP: aksResourceGroup
  TOYGRES_KUBERNETES__AKS_CLUSTER_NAME: aksClusterName
  TOYGRES_KUBERNETES__NAMESPACE: instancesNamespace
  TOYGRES_KUBERNETES__STORAGE_CLASS: storageClassName
  TOYGRES_KUBERNETES__SERVICE_TYPE: 'LoadBalancer'
  TOYGRES_KUBERNETES__INTERNAL_LOAD_BALANCER: 'true'
  TOYGRES_KUBERNETES__CONTROL_PLANE_CIDRS: subnetPrefix
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    virtualNetworkSubnetId: subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: appSettings
}

// Publishing uses Entra ID (func azure functionapp publish with the deployer's az login), never
// basic-auth publishing credentials.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

// App Service Authentication with Microsoft Entra ID: bearer tokens for the API's app registration,
// anything else gets 401. No client secret: the API only validates tokens, it signs nobody in.
// docs/deploy.md records what the Flex Consumption documentation says about this feature; the app
// also validates tokens itself when TOYGRES_AUTH__MODE is jwt (the default).
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: apiClientId
          openIdIssuer: issuer
        }
        validation: {
          allowedAudiences: [
            apiClientId
            'api://${apiClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
  }
  dependsOn: [
    settings
  ]
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
