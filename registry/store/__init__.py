"""Adapters for where Cellar keeps things: the SQL metadata store and the blob store."""
