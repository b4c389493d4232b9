"""gRPC edge: proto ⇄ domain mapping, validation, limits, health, reflection."""
