"""The platform's client side: `GatewayClient` for Python, and the CLI commands built on it."""
