"""How an instance serves TLS: the names its server certificate carries and where it is kept.

Kubernetes instances get a certificate for every name of their Service inside the cluster, signed
by the deployment's CA; clients verify it with ``sslmode=verify-full``. ``server_name`` is the name
they verify: the Service's fully qualified cluster DNS name. When they reach the instance through
another address (a load balancer's IP), libpq's ``hostaddr`` carries that address while ``host``
stays the verified name, so one certificate serves every route without knowing load-balancer IPs
in advance.
"""

from __future__ import annotations

from pydantic import Field

from .validation import StrictModel

#: the Secret holding an instance's server certificate is named after the instance plus this
TLS_SECRET_SUFFIX = "-tls"


def tls_secret_name(k8s_name: str) -> str:
    """The server-certificate Secret of the instance whose Kubernetes name is ``k8s_name``."""
    return f"{k8s_name}{TLS_SECRET_SUFFIX}"


def service_dns_names(service: str, namespace: str, cluster_domain: str) -> list[str]:
    """Every name a pod resolves the Service by, most qualified first."""
    return [
        f"{service}.{namespace}.svc.{cluster_domain}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}",
        service,
    ]


class InstanceTls(StrictModel):
    """TLS of one instance (``None`` on instances that do not serve it: local ones, or created before)."""

    server_name: str = Field(min_length=1, max_length=253)
    dns_names: list[str] = Field(min_length=1)
    #: the Secret (type kubernetes.io/tls) holding the server certificate and key
    secret_name: str = Field(min_length=1, max_length=253)
