// The AKS cluster that runs the PostgreSQL instances: managed Microsoft Entra integration with Azure
// RBAC for Kubernetes authorization, local accounts disabled, OIDC issuer and workload identity on,
// one system node pool in the shared virtual network (Azure CNI overlay), so instances' internal
// load balancers get private IPs the Function App can reach.

@description('Cluster name.')
param name string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Virtual network holding the node subnet.')
param vnetName string

@description('Node subnet name in vnetName.')
param subnetName string

@description('Kubernetes version; empty for the region default.')
param kubernetesVersion string = ''

@description('VM size of the system node pool.')
param nodeVmSize string = 'Standard_D4ds_v5'

@description('Nodes in the system node pool (autoscaler minimum).')
@minValue(1)
@maxValue(100)
param nodeCount int = 2

@description('Autoscaler maximum for the system node pool.')
@minValue(1)
@maxValue(100)
param maxNodeCount int = 5

@description('Private API server (reachable from the virtual network; deploy.sh uses az aks command invoke).')
param privateCluster bool = false

@description('Object id of the deployer, granted cluster-wide Kubernetes admin so deploy.sh can create the namespace and the storage class; empty for none.')
param deployerPrincipalId string = ''

@description('User, Group or ServicePrincipal.')
param deployerPrincipalType string = 'User'

var roles = loadJsonContent('../built-in-roles.json')

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' existing = {
  name: vnetName
}

resource subnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: subnetName
}

// The cluster's own control-plane identity (not the Function App's): it must exist before the
// cluster so its subnet permission is in place when nodes and internal load balancers are created.
resource controlPlaneIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${name}'
  location: location
  tags: tags
}

// Why: AKS joins node NICs and internal load balancer frontends to a subnet it does not own.
resource subnetNetworkContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subnet.id, controlPlaneIdentity.id, roles.NetworkContributor)
  scope: subnet
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.NetworkContributor)
    principalId: controlPlaneIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource cluster 'Microsoft.ContainerService/managedClusters@2024-09-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Base'
    tier: 'Standard'
  }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${controlPlaneIdentity.id}': {}
    }
  }
  properties: {
    kubernetesVersion: empty(kubernetesVersion) ? null : kubernetesVersion
    dnsPrefix: name
    enableRBAC: true
    disableLocalAccounts: true
    aadProfile: {
      managed: true
      enableAzureRBAC: true
      tenantID: tenant().tenantId
    }
    oidcIssuerProfile: {
      enabled: true
    }
    securityProfile: {
      workloadIdentity: {
        enabled: true
      }
    }
    apiServerAccessProfile: {
      enablePrivateCluster: privateCluster
    }
    autoUpgradeProfile: {
      upgradeChannel: 'patch'
      nodeOSUpgradeChannel: 'NodeImage'
    }
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkPolicy: 'azure'
      loadBalancerSku: 'standard'
      podCidr: '10.244.0.0/16'
      serviceCidr: '10.41.0.0/16'
      dnsServiceIP: '10.41.0.10'
    }
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        osType: 'Linux'
        osSKU: 'AzureLinux'
        type: 'VirtualMachineScaleSets'
        vmSize: nodeVmSize
        osDiskType: 'Ephemeral'
        count: nodeCount
        minCount: nodeCount
        maxCount: maxNodeCount
        enableAutoScaling: true
        maxPods: 110
        vnetSubnetID: subnet.id
      }
    ]
  }
  dependsOn: [
    subnetNetworkContributor
  ]
}

// Why: deploy.sh creates two cluster-scoped objects the control plane may not create itself (its
// namespace and the expandable storage class), through az aks command invoke as the deployer.
resource deployerClusterAdmin 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(cluster.id, deployerPrincipalId, roles.AzureKubernetesServiceRbacClusterAdmin)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.AzureKubernetesServiceRbacClusterAdmin)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

output id string = cluster.id
output name string = cluster.name
output oidcIssuerUrl string = cluster.properties.oidcIssuerProfile.issuerURL
