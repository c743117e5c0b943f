"""The runtime: clock, config, logging, health, actor base, supervisor, socket registry."""
