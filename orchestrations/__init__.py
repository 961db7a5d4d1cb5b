"""Toygres orchestrations: create, delete, health monitor, reconciler, certificate rotation, image rollout.

Every version still registered here can have instances in flight; the frozen 1.0.0 code lives in
:mod:`orchestrations.v1`. ``tests/toygres/test_history_replay.py`` replays stored histories of
each registered version against this code.
"""

from __future__ import annotations

from durable_engine import Registry

from . import (
    certificate_rotation,
    create_instance,
    delete_instance,
    health_monitor,
    image_rollout,
    reconciler,
    v1,
)


def register_orchestrations(registry: Registry) -> None:
    registry.orchestration(create_instance.NAME, version=v1.VERSION)(v1.create_instance)
    registry.orchestration(delete_instance.NAME, version=v1.VERSION)(v1.delete_instance)
    registry.orchestration(health_monitor.NAME, version=v1.VERSION)(v1.health_monitor)
    registry.orchestration(reconciler.NAME, version=v1.VERSION)(v1.reconciler)
    registry.orchestration(create_instance.NAME, version=create_instance.VERSION)(
        create_instance.create_instance
    )
    registry.orchestration(delete_instance.NAME, version=delete_instance.VERSION)(
        delete_instance.delete_instance
    )
    registry.orchestration(health_monitor.NAME, version=health_monitor.VERSION)(health_monitor.health_monitor)
    registry.orchestration(reconciler.NAME, version=reconciler.VERSION)(reconciler.reconciler)
    registry.orchestration(certificate_rotation.NAME, version=certificate_rotation.VERSION)(
        certificate_rotation.rotate_certificates
    )
    registry.orchestration(image_rollout.NAME, version=image_rollout.VERSION)(
        image_rollout.roll_out_image_catalog
    )


__all__ = ["register_orchestrations"]
