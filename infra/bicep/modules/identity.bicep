// One user-assigned managed identity: the Function App uses it for host storage, hint queues,
// Application Insights, PostgreSQL (Entra tokens) and AKS.

@description('Name of the identity; it is also the PostgreSQL role name of the control plane.')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
