"""Keeping a registry whole: ``verify``, ``gc`` (with its pure planner ``gc_plan``), ``backup``
and restore, ``lifecycle`` (deprecate, delete), ``transfer`` and ``archive`` (export and import
as one tar file), and ``schema`` (init and db upgrade)."""
