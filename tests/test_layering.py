"""Layering: the library never imports from `tests/`, and runs without torch installed."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_library_imports_without_torch_and_without_tests():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import unpaired, unpaired.train, unpaired.translate, unpaired.benchmark\n"
        "import unpaired.torch_reference\n"
        "loaded = [m for m in sys.modules if m == 'tests' or m.startswith('tests.')]\n"
        "assert not loaded, loaded\n"
        "assert sys.modules['torch'] is None\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_no_library_module_names_the_tests_package():
    pattern = re.compile(r"^\s*(from\s+tests[.\s]|import\s+tests\b)|import_module\(['\"]tests", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in pathlib.Path(ROOT, "unpaired").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []
