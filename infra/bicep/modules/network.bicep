// One virtual network for the control plane's data path: the Function App's integration subnet
// (delegated to Microsoft.App/environments, as Flex Consumption requires), the AKS node subnet (where
// instances' internal load balancers get their private IPs) and, with private access on, a subnet
// delegated to PostgreSQL Flexible Server with its private DNS zone.

@description('Virtual network name.')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Address space of the virtual network.')
param addressPrefix string = '10.40.0.0/16'

@description('Subnet of the Function App (VNet integration); /24 leaves room for Flex scale-out.')
param functionSubnetPrefix string = '10.40.0.0/24'

@description('Subnet of the AKS nodes and of the internal load balancers in front of instances.')
param aksSubnetPrefix string = '10.40.16.0/20'

@description('Subnet delegated to PostgreSQL Flexible Server (used when postgresPrivateAccess is on).')
param postgresSubnetPrefix string = '10.40.1.0/24'

@description('Create the PostgreSQL subnet and private DNS zone.')
param postgresPrivateAccess bool = false

@description('Private DNS zone of the PostgreSQL server; must end with .postgres.database.azure.com.')
param postgresDnsZoneName string

var functionSubnetName = 'snet-functions'
var aksSubnetName = 'snet-aks'
var postgresSubnetName = 'snet-postgres'

var baseSubnets = [
  {
    name: functionSubnetName
    properties: {
      addressPrefix: functionSubnetPrefix
      networkSecurityGroup: {
        id: nsg.id
      }
      delegations: [
        {
          name: 'flex-consumption'
          properties: {
            serviceName: 'Microsoft.App/environments'
          }
        }
      ]
    }
  }
  {
    name: aksSubnetName
    properties: {
      addressPrefix: aksSubnetPrefix
      networkSecurityGroup: {
        id: nsg.id
      }
    }
  }
]

var postgresSubnets = [
  {
    name: postgresSubnetName
    properties: {
      addressPrefix: postgresSubnetPrefix
      networkSecurityGroup: {
        id: nsg.id
      }
      delegations: [
        {
          name: 'postgres-flexible-server'
          properties: {
            serviceName: 'Microsoft.DBforPostgreSQL/flexibleServers'
          }
        }
      ]
    }
  }
]

// No custom rules: the defaults allow traffic inside the virtual network (Functions -> instances'
// internal load balancers -> PostgreSQL) and deny inbound traffic from the internet.
resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-${name}'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: concat(baseSubnets, postgresPrivateAccess ? postgresSubnets : [])
  }
}

resource postgresDnsZone 'Microsoft.Network/privateDnsZones@2024-06-01' = if (postgresPrivateAccess) {
  name: postgresDnsZoneName
  location: 'global'
  tags: tags
}

resource postgresDnsLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = if (postgresPrivateAccess) {
  parent: postgresDnsZone
  name: 'link-${name}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

output vnetId string = vnet.id
output functionSubnetId string = '${vnet.id}/subnets/${functionSubnetName}'
output functionSubnetPrefix string = functionSubnetPrefix
output aksSubnetId string = '${vnet.id}/subnets/${aksSubnetName}'
output aksSubnetName string = aksSubnetName
output postgresSubnetId string = postgresPrivateAccess ? '${vnet.id}/subnets/${postgresSubnetName}' : ''
output postgresDnsZoneId string = postgresPrivateAccess ? postgresDnsZone.id : ''
