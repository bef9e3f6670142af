"""The ``registry`` command: a thin typer layer over ``registry.Registry``."""
