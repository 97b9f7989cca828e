"""scripts/ call the public API of router/ and bot/, never test code (DESIGN section 3): not in
their imports, nor in the code they hand a subprocess."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def imported_modules(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # Code in a string, run by `python -c`; any other string is not code. A NUL byte in
            # one is a SyntaxError on some Pythons and a ValueError on others (Debian's 3.11.2).
            with contextlib.suppress(SyntaxError, ValueError):
                modules |= imported_modules(node.value)
    return modules


def test_no_script_imports_test_code():
    scripts = sorted(SCRIPTS.glob("*.py"))
    assert scripts
    found = {
        script.name: sorted(
            m
            for m in imported_modules(script.read_text())
            if m.split(".")[0] in ("tests", "conftest")
        )
        for script in scripts
    }
    assert {name: modules for name, modules in found.items() if modules} == {}


def test_the_check_sees_code_in_strings():
    assert "tests.fakes.x" in imported_modules('CODE = """\nfrom tests.fakes.x import Y\n"""')


def test_a_string_that_is_not_code_is_skipped_on_every_python():
    """A hostile-input script holds a NUL byte in a string (scripts/fault_attacks.py)."""
    assert imported_modules('BAD = "a\\x00b"\nimport json') == {"json"}
