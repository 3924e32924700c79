"""The ``fewstep`` command line: one module per command, heavy imports inside the commands.

``main()`` maps every :class:`~fewstep.errors.FewstepError` to clean lines on stderr (exit 2 for
input to fix, 1 for a failed run) with no traceback unless ``FEWSTEP_DEBUG=1``.
"""
from __future__ import annotations

import sys

import typer
from typer.core import TyperArgument, TyperCommand, TyperOption

from fewstep.errors import FewstepError, debug

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on click
    from click.exceptions import ClickException

class _PlainArgument(TyperArgument):
    def display_type_rich(self, ctx) -> None:  # "RUN", not "RUN <str>"
        return None

    def _usage_display_name(self) -> str:  # "RUN", not "{RUN}"
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name if self.nargs == 1 else name + "..."


class _PlainOption(TyperOption):
    def display_type_rich(self, ctx) -> str | None:  # "--seed INT", not "--seed <int range>"
        if self.metavar is not None or self.is_flag:
            return self.metavar
        return self.display_type(ctx).strip("<>").split()[0].upper()


class PlainCommand(TyperCommand):
    """Help in plain metavars, as ``--help`` reads elsewhere: ``RUN`` rather than Typer's ``{RUN}`` in
    the usage line and ``RUN <str>`` in the argument list, ``INT`` rather than ``<int range>``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _PlainArgument
            elif type(param) is TyperOption:
                param.__class__ = _PlainOption


app = typer.Typer(
    name="fewstep",
    help="Train and compare few-step generative models (IMM, MeanFlow, sCT, TVM, shortcut, CT, FM).",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


def _register() -> None:
    from fewstep.cli import bench, check, encode, fid_ref, import_checkpoint, new_plugin, plugins, sample, schema, train
    from fewstep.cli import eval as eval_cmd

    for name, command in [("train", train.train), ("sample", sample.sample), ("eval", eval_cmd.evaluate),
                          ("bench", bench.bench), ("encode", encode.encode), ("fid-ref", fid_ref.fid_ref),
                          ("import-checkpoint", import_checkpoint.import_checkpoint), ("check", check.check),
                          ("schema", schema.schema), ("plugins", plugins.plugins),
                          ("new-plugin", new_plugin.new_plugin)]:
        app.command(name, cls=PlainCommand)(command)


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context, version: bool = typer.Option(
        False, "--version", help="Print fewstep's version and exit.")) -> None:
    """Train and compare few-step generative models (IMM, MeanFlow, sCT, TVM, shortcut, CT, FM)."""
    if version:
        from fewstep.version import __version__

        print(f"fewstep {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:  # bare `fewstep`: the help, not an error
        print(ctx.get_help())
        raise typer.Exit()


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every error a user can cause is one line on stderr, never a traceback
    (``FEWSTEP_DEBUG=1`` shows it): exit 2 for input to fix (a recipe, a flag), 1 for a run that failed."""
    try:
        code = app(args=argv, prog_name="fewstep", standalone_mode=False)
    except FewstepError as exc:  # raised outside a command (plugin loading); commands use clean_errors
        if debug():
            raise
        from fewstep.cli.common import print_error

        print_error(exc)
        sys.exit(exc.exit_code)
    except ClickException as exc:  # a bad flag or argument: one line instead of Click's usage block
        if debug():
            raise
        where = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "fewstep"
        print(f"error: {where}: {exc.format_message()} (see {where} -h)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted; the last checkpoint is intact (run the same command to resume)", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
