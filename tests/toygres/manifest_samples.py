"""Instances rendered the way the control plane renders them: request -> planner -> spec -> manifests.

Used by the checkov scan and the docs example, so what is scanned is what a deploy applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from activities.deps import instance_spec
from toygres.deployment_planner import build_deployment_config
from toygres.image_catalog import load_image_catalog
from toygres.models import CreateInstanceRequest, ResourceRequests, ServiceType
from toygres.runtimes import manifests
from toygres.settings import KubernetesSettings, Settings
from toygres.x509 import certificate_info, issue_server_certificate, new_certificate_authority

PASSWORD = "sample-Pa55word-not-real"


def samples() -> dict[str, tuple[CreateInstanceRequest, Settings]]:
    """Three instances: the defaults, a load balancer with source ranges, custom everything."""
    lb_settings = Settings(
        kubernetes=KubernetesSettings(
            load_balancer_source_ranges=["203.0.113.0/24", "198.51.100.7/32"],
            internal_load_balancer=True,
            control_plane_cidrs=["10.9.0.0/24"],
        )
    )
    return {
        "default": (CreateInstanceRequest(name="orders", username="app"), Settings()),
        "loadbalancer": (
            CreateInstanceRequest(name="reporting", service_type=ServiceType.LOAD_BALANCER),
            lb_settings,
        ),
        "custom": (
            CreateInstanceRequest(
                name="ledger",
                username="ledger_owner",
                database="ledger",
                postgres_version="16",
                storage_size="100Gi",
                storage_class="managed-csi-premium",
                resources=ResourceRequests(cpu="4", memory="16Gi"),
                allowed_sources=[
                    {"cidr": "10.20.0.0/16"},
                    {"namespace_selector": {"team": "payments"}, "pod_selector": {"app": "api"}},
                ],
                server_parameters={
                    "max_connections": 400,
                    "statement_timeout": "60s",
                    "log_statement": "ddl",
                },
            ),
            Settings(),
        ),
    }


def render(name: str) -> list[dict[str, Any]]:
    """Every object the Kubernetes runtime applies for sample ``name``, in apply order."""
    request, settings = samples()[name]
    instance_id = UUID(int=0x3F2B9C1E_0D4A_4E8B_9A51_7C2D6E8F1A23 + len(name))
    config = build_deployment_config(
        request, settings, instance_id=instance_id, image_catalog=load_image_catalog()
    )
    spec = instance_spec(config)
    kube = settings.kubernetes
    ns = kube.namespace
    ca = new_certificate_authority("sample CA")
    issued = issue_server_certificate(ca, list(spec.tls_dns_names))
    return [
        manifests.namespace_manifest(ns),
        manifests.secret_manifest(spec, ns, PASSWORD),
        manifests.tls_secret_manifest(
            spec, ns, cert_pem=issued.cert_pem, key_pem=issued.key_pem, ca_pem=ca.cert_pem
        ),
        manifests.config_map_manifest(spec, ns),
        manifests.service_manifest(spec, ns, internal_load_balancer=kube.internal_load_balancer),
        manifests.network_policy_manifest(
            spec,
            ns,
            control_plane_namespace=kube.control_plane_namespace,
            control_plane_cidrs=kube.control_plane_cidrs,
        ),
        manifests.pod_disruption_budget_manifest(spec, ns),
        manifests.statefulset_manifest(
            spec,
            ns,
            image_repository=kube.image_repository,
            tls_certificate_sha256=certificate_info(issued.cert_pem).sha256,
        ),
    ]


def write_samples(directory: Path) -> list[Path]:
    """One YAML file per sample (multi-document), as ``kubectl apply -f`` would take them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in samples():
        path = directory / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all(render(name), sort_keys=False))
        paths.append(path)
    return paths
