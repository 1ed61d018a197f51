"""The CLI reference is generated from the Typer apps: it fails here when it drifts."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_up_to_date():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "cli_docs.py"), "--check"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    text = (ROOT / "docs" / "cli.md").read_text()
    for command in ("aunet-prep", "aunet-train", "aunet-eval", "aunet-export", "aunet-calib", "aunet-infer", "aunet-bench"):
        assert f"## `{command}" in text, command
