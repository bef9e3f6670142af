"""Health over time: ``registry probe`` against what is deployed (``monitoring.ProbeEnv``), the
report and its change points (``report``, pure), ``watch`` with alerts and the automatic
rollback (``watching``, pure, and ``monitoring.Watch``), and the Prometheus page (``metrics``).
The suite itself, and how an answer is judged, is ``registry.probes``."""
