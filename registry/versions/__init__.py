"""Versions: the manifest a user writes and the files it names (``manifest``), what a user types
to name one (``refs``), ``pushing`` (``Push``), git ``provenance``, and looking back at them:
``inspection`` (show, diff, blame, log) with the pure ``diffing`` and ``blame``."""
