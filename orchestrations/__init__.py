"""Toygres orchestrations: create, delete, health monitor, reconciler."""

from __future__ import annotations

from durable_engine import Registry

from . import create_instance, delete_instance, health_monitor, reconciler


def register_orchestrations(registry: Registry) -> None:
    registry.orchestration(create_instance.NAME, version=create_instance.VERSION)(
        create_instance.create_instance
    )
    registry.orchestration(delete_instance.NAME, version=delete_instance.VERSION)(
        delete_instance.delete_instance
    )
    registry.orchestration(health_monitor.NAME, version=health_monitor.VERSION)(health_monitor.health_monitor)
    registry.orchestration(reconciler.NAME, version=reconciler.VERSION)(reconciler.reconciler)


__all__ = ["register_orchestrations"]
