"""Deploys: one object per action (``Promote``, ``Rollback``, ``Recover``, ``AddEnv``,
``RemoveEnv``, ``Status``) built from the registry's ``Configuration``, and the ports they use:
the container engine (``engine.py``; ``docker.py`` for real, ``fake.py`` in memory) and the HTTP
checks (``http.py``)."""
