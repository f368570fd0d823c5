"""Chaos tests share the e2e fixtures (cluster, operator process, Redis on the node)."""

from tests.e2e.conftest import crd, operator
from tests.e2e.test_heartbeats import redis_url

__all__ = ["crd", "operator", "redis_url"]
