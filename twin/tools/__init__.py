"""Operator tools: load generator, health check, live monitor."""
