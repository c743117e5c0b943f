"""Plugins: connectors, classifiers, assessors, processors, transports (built in, or from entry points)."""
