"""Adapters that run versions: the Docker engine."""
