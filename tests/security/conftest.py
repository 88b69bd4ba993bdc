"""The security tests reuse the integration tests' in-process simulator."""

from tests.integration.conftest import sim_url

__all__ = ["sim_url"]
