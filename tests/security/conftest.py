"""The security tests reuse the integration tests' in-process simulator and gateway."""

from tests.integration.conftest import live_gateway, sim_url

__all__ = ["live_gateway", "sim_url"]
