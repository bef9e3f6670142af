"""Start-up stays lean: each command imports only what it uses. The budgets are the module counts
measured when this test was written plus a small margin; a newcomer beyond them fails here
(bench/startup.py prints the timings)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys
from cli.main import main
sys.argv = ["registry", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
mods = sorted(sys.modules)
print("MODULES", len(mods), *[m for m in mods if m.split(".")[0] in FORBIDDEN], sep="\\n")
"""

# command -> (budget of modules, top-level packages it must not import)
BUDGETS = {
    ("--help",): (360, {"sqlalchemy", "docker", "git", "jinja2", "jsonschema", "starlette", "prometheus_client"}),
    ("rollback", "--help"): (470, {"sqlalchemy", "docker", "git", "jinja2", "jsonschema", "starlette"}),
    ("list",): (480, {"docker", "git", "jinja2", "jsonschema", "starlette", "prometheus_client", "alembic"}),
}


@pytest.mark.parametrize("args", list(BUDGETS), ids=" ".join)
def test_imports_stay_within_budget(args, sqlite_home):
    budget, forbidden = BUDGETS[args]
    code = f"FORBIDDEN = {sorted(forbidden)!r}\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "REGISTRY_HOME": str(sqlite_home)}).stdout
    lines = out[out.index("MODULES"):].splitlines()[1:]
    count, heavy = int(lines[0]), lines[1:]
    assert heavy == [] and count <= budget, f"{count} modules (budget {budget}); heavy: {heavy[:10]}"
