"""Security tests run against the same operator process as the e2e tests."""

from tests.e2e.conftest import crd, operator

__all__ = ["crd", "operator"]
