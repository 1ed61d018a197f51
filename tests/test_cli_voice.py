"""One voice across every command: help for every option, one-line errors on stderr, usage errors as exit 2."""
from __future__ import annotations

import importlib
import sys
from typing import Literal

import pytest
import typer

from aunet.cli import error_line, exclusive, fail, run

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "scripts"))
from cli_docs import CLIS  # noqa: E402  (the same list the CLI reference is generated from)

ENTRY_POINTS = {  # console script -> module whose main() it runs (pyproject.toml [project.scripts])
    "aunet-prep": "aunet.prep.cli",
    "aunet-train": "aunet.train.cli",
    "aunet-eval": "aunet.evaluate.cli",
    "aunet-export": "aunet.export.cli",
    "aunet-calib": "aunet.calibration.cli",
    "aunet-infer": "aunet.runtime.cli",
    "aunet-bench": "aunet.bench.cli",
    "aunet-serve": "aunet.serve.cli",
}


def _commands(command, path):
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from _commands(sub, f"{path} {name}")
    else:
        yield path, command


@pytest.mark.parametrize("prog,module,attr", CLIS, ids=[c[0] for c in CLIS])
def test_every_option_and_argument_has_help(prog, module, attr):
    app = getattr(importlib.import_module(module), attr)
    missing = []
    for path, command in _commands(typer.main.get_command(app), prog):
        for param in command.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path} {param.opts[0] if param.opts else param.name}")
    assert not missing, "no help text: " + ", ".join(missing)


def test_the_entry_points_are_the_console_scripts():
    import tomllib
    from pathlib import Path

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {prog: f"{module}:main" for prog, module in ENTRY_POINTS.items()}


@pytest.mark.parametrize("prog", sorted(ENTRY_POINTS))
def test_a_usage_error_is_one_line_on_stderr_with_exit_2(prog, monkeypatch, capsys):
    main = importlib.import_module(ENTRY_POINTS[prog]).main
    monkeypatch.setattr(sys, "argv", [prog, "--no-such-option"])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    assert exc.value.code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and "--no-such-option" in lines[0], err


def test_fail_prints_one_line_and_returns_the_exit(capsys):
    exit_ = fail("aunet-x", "first line\n  second line", 3)
    assert isinstance(exit_, typer.Exit) and exit_.exit_code == 3
    assert capsys.readouterr().err == "aunet-x: error: first line; second line\n"
    assert error_line("aunet-x", "plain") == "aunet-x: error: plain"


def test_run_reports_choices_exclusive_options_and_exits(capsys):
    app = typer.Typer(add_completion=False)

    @app.command()
    def go(target: Literal["tensorrt", "cpu"] = typer.Option("cpu", help="where"),
           frames: int = typer.Option(0, help="n"), every: int = typer.Option(0, help="k")) -> None:
        exclusive("aunet-x", frames=frames, every=every)
        if target == "tensorrt":
            raise fail("aunet-x", "no GPU here", 3)

    for argv, code, text in [(["--target", "gpu"], 2, "'gpu' is not one of 'tensorrt', 'cpu'"),
                             (["--frames", "5", "--every", "2"], 2, "--frames and --every are mutually exclusive"),
                             (["--target", "tensorrt"], 3, "no GPU here"),
                             ([], 0, None)]:
        with pytest.raises(SystemExit) as exc:
            run(app, "aunet-x", argv)
        err = capsys.readouterr().err
        assert exc.value.code == code, (argv, err)
        if text is None:
            assert err == ""
        else:
            assert err.count("\n") == 1 and err.startswith("aunet-x: error: ") and text in err, err
