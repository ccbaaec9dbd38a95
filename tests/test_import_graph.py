"""The package's shape, checked by scripts/import_graph.py: no module inside edgekd imports the
façade (edgekd.api) or the CLI, and no import cycle (function-level imports included; only
`if TYPE_CHECKING:` imports are exempt). And the checker itself catches both."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "import_graph.py"


def _run(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_edgekd_has_no_facade_imports_and_no_import_cycles():
    rc, graph = _run()
    assert graph["facade_imports"] == 0 and graph["cycles"] == 0, graph
    assert rc == 0
    assert graph["root_modules"] <= 8  # api, config, errors, fileio, registry, __main__: the rest lives in stages


def test_the_checker_finds_a_deferred_cycle_and_a_facade_import_but_not_a_type_checking_one(tmp_path):
    pkg = tmp_path / "edgekd"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "api.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("from edgekd import api\n")  # allowed: the CLI calls the façade
    (pkg / "a.py").write_text("from edgekd import b\n")
    (pkg / "b.py").write_text("def f():\n    from edgekd.a import x  # deferred, still a cycle\n")
    (pkg / "c.py").write_text("def g():\n    from edgekd import api\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgekd import e\n")
    (pkg / "e.py").write_text("from edgekd import d\n")
    rc, graph = _run("--package-dir", str(pkg), "--json")
    assert rc == 1
    assert graph["cycles"] == 1 and graph["modules_in_cycles"] == 2  # a <-> b; d <-> e is TYPE_CHECKING only
    assert graph["facade_imports"] == 1  # c -> api; cli -> api is allowed
