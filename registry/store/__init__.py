"""Adapters for where Cellar keeps things: ``sql`` (every SQL statement, behind ``Store``) and
``files`` (the blob store and the stat cache)."""
