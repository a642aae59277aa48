"""The API gateway: FastAPI app, routes, auth, metrics, and the command that serves it."""
