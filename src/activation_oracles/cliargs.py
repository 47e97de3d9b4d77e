"""The command line's shared parts, below cli.py so that every `ao` subcommand module can use them without
importing the app:

- the one error boundary every command runs inside (`guard_commands`): what a user can fix is printed as
  `error: ...` and exits 2; anything else is a bug and keeps its traceback;
- option types whose values are checked at parse time (`count_option`, `seed_option`, `choice_option`, ...), and
  the `ao` group that prints usage errors in the same `error: ...` form (`Group`);
- checks made before the slow part of a command (`check_input_file`, `require_module`; output directories:
  fsutil.check_writable_dir);
- parsing of compound values (comma-separated integers and choices; positions live with the query API in
  oracle.parse_positions).

Only typer is imported here: `ao --help` must not wait for torch.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import math
import os
import sys
import traceback
import warnings
from pathlib import Path

import typer
import typer.core
from typer.exceptions import TyperException

USAGE_EXIT = 2
DEBUG_ENV = "AO_DEBUG"  # set to 1: every error keeps its traceback
DTYPES = ("float32", "bfloat16", "float16")

# Optional packages, and what installs them.
INSTALL_HINTS = {
    "bitsandbytes": "pip install 'activation-oracles[gpu]'",
    "sklearn": "pip install scikit-learn",
    "wandb": "pip install wandb",
    "tensorboard": "pip install tensorboard",
    "matplotlib": "pip install matplotlib",
}


# ----------------------------------------------------------------------------- the error boundary


def _os_message(err: OSError) -> str:
    where = err.filename if err.filename is not None else "a file"
    reasons = {
        errno.ENOSPC: f"no space left on the device holding {where}: free some space (or write somewhere else) "
                      "and run the command again",
        errno.EDQUOT: f"disk quota exceeded writing {where}: free some space (or write somewhere else)",
        errno.EROFS: f"{where} is on a read-only file system: choose a writable location",
        errno.EACCES: f"permission denied: {where}: choose a location you can write to (or fix its permissions)",
        errno.EPERM: f"operation not permitted on {where}: choose another location",
        errno.ENOTDIR: f"{where}: part of this path is a file, not a directory",
        errno.EISDIR: f"{where} is a directory; a file was expected",
        errno.EEXIST: f"{where} already exists",
        errno.ENOENT: f"{where}: no such file or directory",
        errno.ENAMETOOLONG: f"{where}: the file name is too long",
    }
    if err.errno in reasons:
        return reasons[err.errno]
    return str(err)


def user_message(err: BaseException) -> str | None:
    """The `error: ...` text for an exception the user can act on; None for a bug (keep its traceback).

    ValueError is this package's "bad input" (ConfigError, DataError, AuditError, AdapterConfigError, ...
    derive from it and name the field or file); CheckpointError names the directory; OSError names the
    file; ImportError names the missing package."""
    name = type(err).__name__
    if isinstance(err, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({err}); convert it to UTF-8"
    if isinstance(err, ValueError):
        return str(err)
    if isinstance(err, OSError):
        return _os_message(err)
    if isinstance(err, ModuleNotFoundError) and err.name:
        module = err.name.split(".")[0]
        return f"{err} (install it: {INSTALL_HINTS.get(module, f'pip install {module}')})"
    if name == "CheckpointError":  # train.checkpoint: subclass of RuntimeError, message names the directory
        return str(err)
    if name == "SafetensorError":
        return f"a .safetensors file is corrupt or truncated ({err}); save or download it again"
    if name == "OutOfMemoryError" or isinstance(err, MemoryError):
        return (f"out of memory ({str(err).splitlines()[0] if str(err) else name}): lower --batch-size, or use a "
                "smaller model or shorter inputs")
    return None


def _report(err: BaseException) -> None:
    if isinstance(err, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    msg = user_message(err)
    if msg is None or os.environ.get(DEBUG_ENV):
        if msg is None:
            traceback.print_exc()
            typer.echo(f"internal error: {type(err).__name__} is a bug in activation-oracles, not a problem with "
                       "your input; please report it with the traceback above", err=True)
            raise typer.Exit(1) from None
        raise err
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(USAGE_EXIT) from None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """This package's own warnings as `warning: ...` lines (no source path); others as Python shows them."""
    if category is UserWarning and "activation_oracles" in str(filename):
        typer.echo(f"warning: {message}", err=True)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOWWARNING = warnings.showwarning
_PYTHON_SHOWWARNMSG = getattr(warnings, "_showwarnmsg_impl", None)


def _plain_warnings() -> bool:
    """Whether warnings print as Python prints them (not recorded by a test, nor redirected by a caller)."""
    return warnings.showwarning is _PYTHON_SHOWWARNING and getattr(warnings, "_showwarnmsg_impl", None) is \
        _PYTHON_SHOWWARNMSG


def command_boundary(fn):
    """Run the command `fn` inside the error boundary (see `user_message`). Typer reads the signature
    through `__wrapped__`, so options are unchanged."""
    if getattr(fn, "_ao_guarded", False):
        return fn

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            with warnings.catch_warnings():
                if _plain_warnings():
                    warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):  # typer's own: usage errors, exits
            raise
        except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - sorted into user errors and bugs
            _report(err)

    run._ao_guarded = True
    return run


class Group(typer.core.TyperGroup):
    """The `ao` group: usage errors (an unknown option, a value out of range) print as `error: ...` plus
    where to find help, exit 2, like the errors the commands raise."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except TyperException as e:  # click's usage errors, vendored by typer
            if type(e).__name__ == "NoArgsIsHelpError":  # `ao` alone: the help (rich prints it when built)
                if e.format_message().strip():
                    e.show()
                sys.exit(getattr(e, "exit_code", USAGE_EXIT))
            ctx = getattr(e, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            param = getattr(e, "param", None)
            if isinstance(e, OptionValueError) and param is not None and getattr(param, "opts", None):
                message = f"{max(param.opts, key=len)} {e.message}"  # "--port 99999: must be at most 65535"
            else:
                message = e.format_message()
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(getattr(e, "exit_code", USAGE_EXIT))
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def guard_commands(app: typer.Typer) -> typer.Typer:
    """Put every command of `app` and of its sub-apps (registered so far) inside the error boundary."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = command_boundary(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_commands(group.typer_instance)
    return app


# ----------------------------------------------------------------------------- option types (checked at parse time)


class OptionValueError(typer.BadParameter):
    """An option's value out of range; the message starts with the value."""


def _range_check(minimum=None, maximum=None, above=None, field: str | None = None):
    """A typer callback refusing values outside [minimum, maximum] (or not above `above`, or not finite);
    its message starts with the value, the error line with the option (see Group), and names the config
    `field` the option sets, if any."""
    where = f" ({field})" if field else ""

    def check(value):
        if value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionValueError(f"{value}: must be a finite number{where}")
        if minimum is not None and value < minimum:
            raise OptionValueError(f"{value}: must be at least {minimum}{where}")
        if above is not None and value <= above:
            raise OptionValueError(f"{value}: must be greater than {above}{where}")
        if maximum is not None and value > maximum:
            raise OptionValueError(f"{value}: must be at most {maximum}{where}")
        return value

    return check


def count_option(default, *flags: str, help: str = "", minimum: int = 1, field: str | None = None):  # noqa: A002
    """An integer option of at least `minimum` (1: a count; 0 is never read as "unset"); `field`: the config
    field it sets, named in the error."""
    return typer.Option(default, *flags, callback=_range_check(minimum, field=field),
                        help=_with(help, f">= {minimum}"))


def seed_option(default: int | None = 0, *flags: str, help: str = "Random seed."):  # noqa: A002
    return typer.Option(default, *(flags or ("--seed",)), callback=_range_check(0), help=_with(help, "an integer >= 0"))


def positive_option(default, *flags: str, help: str = "", field: str | None = None):  # noqa: A002
    """A finite number > 0 (scales, memory, rates)."""
    return typer.Option(default, *flags, callback=_range_check(above=0, field=field), help=_with(help, "> 0"))


def percent_option(default, *flags: str, help: str = ""):  # noqa: A002
    return typer.Option(default, *flags, callback=_range_check(0, 100), help=_with(help, "0-100"))


def choice_option(default, *flags: str, choices: tuple[str, ...], help: str = ""):  # noqa: A002
    """A string that must be one of `choices`."""
    def check(value):
        if value is not None and value not in choices:
            raise OptionValueError(f"{value!r}: use one of {', '.join(choices)}")
        return value

    return typer.Option(default, *flags, callback=check, help=help or " | ".join(choices))


def port_option(default: int = 0, *flags: str, help: str = ""):  # noqa: A002
    return typer.Option(default, *(flags or ("--port",)), callback=_range_check(0, 65535), help=help)


def _with(help: str, rule: str) -> str:  # noqa: A002
    return f"{help} [{rule}]".strip()


def dtype_option(help: str = "float32 | bfloat16 | float16"):  # noqa: A002
    return choice_option(None, "--dtype", choices=DTYPES, help=help)


def _check_device(value: str | None) -> str | None:
    if value is None:
        return None
    from .models import check_device  # torch, only when --device is given

    try:
        return check_device(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def device_option(help: str = "cpu | cuda | cuda:N | mps (default: cuda when there is one)"):  # noqa: A002
    return typer.Option(None, "--device", callback=_check_device, help=help)


# ----------------------------------------------------------------------------- compound values


def parse_ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        out = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        out = None
    if not out:
        raise ValueError(f"{flag} {text!r}: give comma-separated integers, e.g. 7,15,22")
    return out


def parse_choices(text: str | None, flag: str, minimum: int = 2) -> tuple[str, ...] | None:
    """'Yes,No' -> ('Yes', 'No'): at least `minimum` distinct non-empty choices."""
    if text is None:
        return None
    out = tuple(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    if len(out) < minimum:
        raise ValueError(f"{flag} {text!r}: give at least {minimum} different comma-separated choices, e.g. Yes,No")
    return out


def parse_names(text: str | None, flag: str) -> list[str] | None:
    """'a,b' -> ['a', 'b']; an option given with nothing in it is an error, not "all"."""
    if text is None:
        return None
    out = [t.strip() for t in text.split(",") if t.strip()]
    if not out:
        raise ValueError(f"{flag} {text!r}: give one or more comma-separated names")
    return out


# ----------------------------------------------------------------------------- checks before the slow part


def check_input_file(path: str | os.PathLike, option: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{option} {path}: no such file")
    if p.is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{option} {path}: cannot be read (permission denied)")
    return p


def require_module(module: str, purpose: str) -> None:
    """Refuse at once (not after the slow part) when an optional package is missing."""
    if importlib.util.find_spec(module) is None:
        hint = INSTALL_HINTS.get(module, f"pip install {module}")
        raise ValueError(f"{purpose} needs {module}, which is not installed: {hint}")
