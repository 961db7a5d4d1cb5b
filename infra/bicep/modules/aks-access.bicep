// The control plane identity's access to the cluster (new or existing), deployed in the cluster's
// resource group: just enough to fetch a user kubeconfig and manage instances in one namespace.

@description('Name of the AKS cluster in this resource group.')
param clusterName string

@description('Namespace the control plane creates instances in (created by deploy.sh).')
param namespace string

@description('Object (principal) id of the control plane managed identity.')
param identityPrincipalId string

var roles = loadJsonContent('../built-in-roles.json')

resource cluster 'Microsoft.ContainerService/managedClusters@2024-09-01' existing = {
  name: clusterName
}

// Azure RBAC for Kubernetes accepts role assignments at namespace scope. Referencing the namespace as
// an existing child resource yields exactly that scope id (the resource itself is never read):
// <cluster id>/namespaces/<namespace>.
resource instancesNamespace 'Microsoft.ContainerService/managedClusters/namespaces@2025-02-02-preview' existing = {
  parent: cluster
  name: namespace
}

// Why: toygres/runtimes/aks_credentials.py calls listClusterUserCredential to get a kubeconfig (with
// Entra auth it holds no secret; the identity's token authenticates each call).
resource clusterUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cluster.id, identityPrincipalId, roles.AzureKubernetesServiceClusterUserRole)
  scope: cluster
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.AzureKubernetesServiceClusterUserRole)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Why: the runtime creates, reads and deletes StatefulSets, Services, Secrets and PVCs of instances;
// Writer allows exactly namespaced workload objects (no RBAC objects, no namespaces), and only in
// the instances' namespace.
resource namespaceWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(cluster.id, namespace, identityPrincipalId, roles.AzureKubernetesServiceRbacWriter)
  scope: instancesNamespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.AzureKubernetesServiceRbacWriter)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}
