"""HTTP transports of the twin: REST/JSON gateway, server-sent events, probes,
OpenAPI and the web console (static files in ``console/``)."""
