"""The package layout contract: light `import aunet`, generic folders mapped into the aunet namespace."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_aunet_does_not_import_torch(tmp_path):
    r = run_python(
        "import sys, aunet, aunet.runtime, aunet.export, aunet.calibration, aunet.config, aunet.io\n"
        "cfg = aunet.ModelConfig.named('small')\n"
        "assert cfg.grid == 7, cfg.grid\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision')))\n",
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_generic_folders_install_inside_the_aunet_namespace(tmp_path):
    # Run outside the repo so the checkout itself is not on sys.path.
    r = run_python(
        "import importlib.util as u, aunet.export as e, aunet.runtime as r, aunet.calibration as c\n"
        "print([u.find_spec(n) is None for n in ('export', 'runtime', 'calibration')])\n"
        "print(e.__file__, r.__file__, c.__file__)\n",
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "[True, True, True]"
    for folder, path in zip(("export", "runtime", "calibration"), lines[1].split()):
        assert Path(path).parent.name == folder


def test_lazy_attributes_resolve_and_unknown_names_fail():
    import aunet

    assert callable(aunet.build_model)
    try:
        aunet.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("unknown attribute did not raise")
