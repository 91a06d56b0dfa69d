"""The ASGI bridge: scope construction, the request/response cycle, lifespan."""
