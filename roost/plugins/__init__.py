"""Plugins: connectors, classifiers, processors, transports (built in, or from entry points)."""
