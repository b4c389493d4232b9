"""The facts: events and their decoders, the series store, the action log, config."""
