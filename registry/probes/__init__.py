"""A version's probe suite: send each standard question and judge its answer (``probing``),
render templated bodies in a sandbox (``templating``), and read a version's suite and store a run
(``suites``). Used by the promote gate (``registry.deploy``) and by ``registry.health``."""
