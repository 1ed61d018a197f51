"""One voice for every aunet command: ``aunet-X: error: <one line>`` on stderr and the documented exit codes.

Each console entry point is ``run(app, "aunet-X")``. Inside a command, ``raise fail(PROG, message, code)``
reports a failure; usage errors (an unknown option, a value outside its choices, mutually exclusive options)
come out in the same one-line form with exit 2 instead of Click's boxed panel. Only entry points exit the
process: library code raises.
"""
from __future__ import annotations

import sys
from typing import NoReturn, Sequence

import typer

# Every command: 0 done; 1 a check or threshold failed; 2 bad input or usage; 3 a missing optional dependency
# or hardware; 130 interrupted. Commands with more codes list them in their help.
EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_MISSING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def error_line(prog: str, message: str) -> str:
    """``aunet-X: error: message`` on one line (newlines in the message folded into "; ")."""
    text = "; ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"{prog}: error: {text}"


def print_error(prog: str, message: str) -> None:
    print(error_line(prog, message), file=sys.stderr, flush=True)


def fail(prog: str, message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print the error line and return the Exit to raise: ``raise fail(PROG, "no such file", 2)``."""
    print_error(prog, message)
    return typer.Exit(code)


def exclusive(prog: str, **options: object) -> None:
    """Refuse two or more of the named options given together (None / False / 0 count as not given)."""
    given = [name for name, value in options.items() if value not in (None, False, 0, ())]
    if len(given) > 1:
        names = " and ".join(f"--{name.replace('_', '-')}" for name in given)
        raise fail(prog, f"{names} are mutually exclusive: give one")


def run(app: typer.Typer, prog: str, argv: Sequence[str] | None = None) -> NoReturn:
    """Console entry point: run a Typer app, turn usage errors into one error line, exit with the code."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except typer.Abort:
        print_error(prog, "interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        # Click's UsageError / BadParameter / NoSuchOption (Typer vendors its own Click since 0.20, so match the
        # interface, not one module's classes).
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None and exc.exit_code == EXIT_BAD_INPUT else ""
        print_error(prog, exc.format_message().replace("Value error, ", "") + hint)
        sys.exit(exc.exit_code)
    sys.exit(result if isinstance(result, int) else EXIT_OK)
