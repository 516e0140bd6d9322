"""CI's run of the transformers compatibility matrix: every family's parity tests against the oldest
and the newest release of the declared range (the pinned release runs with the rest of the suite),
with the committed fingerprints and nothing trusted (``tools/compat_matrix.py --check``). Each
release is installed once into .compat/ (from the package registry on a fresh clone)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import compat_matrix  # noqa: E402

sys.path.remove(str(ROOT / "tools"))


def test_oldest_and_newest_releases_pass_the_parity_tests():
    releases = compat_matrix.ci_releases()
    results, _ = compat_matrix.load_results()
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "compat_matrix.py"), "--check", *releases],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-8000:]}\n{result.stderr[-4000:]}"
    for release in releases:
        verified = sum(status == "verified" for status in results[release]["families"].values())
        assert verified == len(compat_matrix.PARITY), results[release]["families"]
        assert f"transformers {release}: {verified} of {verified} verified families pass" in result.stdout
