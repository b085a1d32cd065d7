"""Script arguments: dataclasses filled from a YAML file and the command line (the command line wins), and the one
place where a user error becomes one line on stderr instead of a traceback.

    python scripts/train_teacher.py configs/teacher/digits.yaml --max_steps 200 --output_dir /tmp/teacher

One YAML key is one dataclass field; `--help` lists every field with its help text. Fields that exclude each other
(a dataclass's `EXCLUSIVE_FIELDS`, e.g. the student's size as `student_id`, `student_preset` or `student_layers`)
are one choice: naming one on the command line replaces the config file's. YAML values are converted to
the field's type and checked like command-line values (`max_steps: 2.5` is refused, `learning_rate: 3e-4`, which
YAML reads as a string, becomes a float). Every script ends with `run(main)`.
"""

import dataclasses
import importlib
import os
import sys
import types
import typing
import warnings
from collections.abc import Hashable

import yaml
from transformers import HfArgumentParser


class UsageError(ValueError):
    """Bad command-line arguments or configuration file."""


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors raise `UsageError` instead of printing the usage and exiting, so that tests
    see the exception and `run` prints one line."""

    def error(self, message):
        raise UsageError(f"{message}. Run with --help for the fields.")


def _type_name(annotation) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def expand_home(value: str) -> str:
    """`~/...` as the user's home folder: a YAML value or `--flag=~/...` reaches a script without the shell's
    expansion, and the file went to a folder literally named `~` in the working directory."""
    return os.path.expanduser(value) if value.startswith("~") else value


def _expand_argv(arg: str) -> str:
    if arg.startswith("--") and "=" in arg:
        flag, value = arg.split("=", 1)
        return f"{flag}={expand_home(value)}"
    return expand_home(arg)


def convert_value(name: str, value, annotation, source: str = "the YAML config"):
    """`value` read from a YAML file, as the dataclass field `name` of type `annotation` needs it.

    Raises `UsageError` naming the field when the value does not have that type: a float for an int field, a word for
    a float field, a scalar for a list field, `null` for a field that is not optional.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return convert_value(name, value, options[0], source)
        return value
    def problem(kind: str) -> str:  # (not `str.format`: a YAML mapping's braces in `value` are no format fields)
        return f"`{name}` in {source} must be {kind}, got {value!r} ({type(value).__name__})."

    if origin is list:
        if not isinstance(value, list):
            raise UsageError(problem(f"a list (each item {_type_name(args[0])})"))
        return [convert_value(name, v, args[0], source) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `3e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return expand_home(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise UsageError(problem(_type_name(annotation)))


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping, also once with dashes and once with
    underscores (`max-steps`, `max_steps`: one setting): PyYAML keeps the last one without a word."""

    def construct_mapping(self, node, deep=False):
        seen = {}  # key as the command line reads it -> key as written
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            setting = key.replace("-", "_") if isinstance(key, str) else key
            if not isinstance(setting, Hashable):
                continue  # SafeLoader refuses an unhashable key itself
            if setting in seen:
                twice = (f"the key {key!r} is given twice" if seen[setting] == key else
                         f"{seen[setting]!r} and {key!r} are one setting, written twice")
                raise yaml.constructor.ConstructorError(None, None, f"{twice} (which value is meant?)",
                                                        key_node.start_mark)
            seen[setting] = key
        return super().construct_mapping(node, deep=deep)


def read_config(path: str, dataclass_types) -> dict:
    """The values of the YAML file `path`, converted to the types of the fields of `dataclass_types`. Keys may be
    written with dashes, as on the command line (`max-steps`); a key given twice (or once with dashes and once with
    underscores) is refused."""
    try:
        with open(path) as f:
            values = yaml.load(f, Loader=_UniqueKeyLoader)
    except OSError as error:
        raise UsageError(f"cannot read the config file {path!r}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"the config file {path!r} is not valid YAML: {' '.join(str(error).split())}") from None
    values = values or {}
    if not isinstance(values, dict):
        raise UsageError(f"the config file {path!r} must hold `key: value` lines, got a {type(values).__name__}.")
    values = {key.replace("-", "_") if isinstance(key, str) else key: value for key, value in values.items()}
    fields = {}
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        fields.update({f.name: hints[f.name] for f in dtype.__dataclass_fields__.values() if f.init})
    unknown = sorted(map(str, set(values) - set(fields)))
    if unknown:
        raise UsageError(f"unknown keys in the config file {path!r}: {unknown}. Run with --help for the fields.")
    source = f"the config file {path!r}"
    return {name: convert_value(name, value, fields[name], source) for name, value in values.items()}


def _flags_given(argv: list[str]) -> set[str]:
    """Field names the command line sets (`--name value`, `--name=value`, `--name-with-dashes`)."""
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


def without_overridden_choices(config: dict, argv: list[str], dataclass_types) -> dict:
    """The config's values, less the members of an `EXCLUSIVE_FIELDS` group of which the command line sets another
    (`--student_layers 6` over a config with `student_preset: draft-1L` means 6 layers, not two sizes)."""
    given = _flags_given(argv)
    dropped = set()
    for dtype in dataclass_types:
        for group in getattr(dtype, "EXCLUSIVE_FIELDS", ()):
            if given & set(group):
                dropped |= set(group) - given
    return {name: value for name, value in config.items() if name not in dropped}


def parse_args(dataclass_types, argv: list[str] | None = None, description: str | None = None,
               unread: dict[str, str] | None = None):
    """Return one instance per dataclass type, from `[config.yaml] [--field value ...]`.

    Raises `UsageError` (a `ValueError`) naming the argument for an unknown flag or key, a value of the wrong type, an
    unreadable config file, or a value the dataclass's own check (`__post_init__`) refuses. A field of a shared
    dataclass that this script does not read (`unread`: field name -> why), given on the command line or in the
    config, gets a one-line warning on stderr: harmless (a place for files this script does not make) and often
    given on purpose with the options shared by a pipeline's steps, but the user should not believe it took effect.
    """
    argv = [_expand_argv(str(a)) for a in (sys.argv[1:] if argv is None else argv)]
    parser = ArgumentParser(dataclass_types, description=description)
    named = _flags_given(argv)
    # A config file later on the line (not an option's value) was "unrecognized", or failed a check first.
    late = [arg for before, arg in zip(argv, argv[1:])
            if str(arg).lower().endswith((".yaml", ".yml")) and not str(before).startswith("-")]
    if late:
        raise UsageError(f"{late[0]} looks like a config file: it must be the first argument "
                         "(`script.py config.yaml --field value ...`).")
    if argv and argv[0].lower().endswith((".yaml", ".yml")):
        config = read_config(argv.pop(0), dataclass_types)
        named |= set(config)
        parser.set_defaults(**without_overridden_choices(config, argv, dataclass_types))
    try:
        *instances, unknown = parser.parse_args_into_dataclasses(
            args=argv, look_for_args_file=False, return_remaining_strings=True
        )
    except UsageError:
        raise
    except ValueError as error:  # a dataclass's own check (`__post_init__`): a bad value is a usage error too
        raise UsageError(str(error)) from error
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}. Run with --help for the fields.")
    for instance in instances:  # every seed goes to `torch.manual_seed` / numpy: refused after the models loaded
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            if (f.name == "seed" or f.name.endswith("_seed")) and isinstance(value, int) and not 0 <= value < 2**32:
                raise UsageError(f"`{f.name}` must be in [0, 2**32), got {value}.")
    for name, why in (unread or {}).items():
        if name in named:
            script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "this script"
            print(f"{script}: warning: `{name}` is not read by {script} ({why}): ignored.", file=sys.stderr)
    return tuple(instances)


def field_defaults(args) -> dict:
    """The default of every field of the dataclass `args`, list fields' `default_factory` called."""
    return {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for f in dataclasses.fields(args)}


def check_options_read(args, chosen: str, options: dict[str, tuple[str, ...]]) -> None:
    """`ValueError` for an option of the dataclass `args` set away from its default while the value of its field
    `chosen` (a method, a loss) is not one of those that read it (`options`: name -> the values that read it): the
    user would believe it took effect."""
    defaults = field_defaults(args)
    value = getattr(args, chosen)
    for name, readers in options.items():
        if getattr(args, name) != defaults[name] and value not in readers:
            back = f" (or set it back to {defaults[name]})" if defaults[name] is not None else ""
            allowed = " or ".join(str(r).lower() if isinstance(r, bool) else str(r) for r in readers)  # YAML's true
            raise ValueError(f"`{name}` is read only with `{chosen}` {allowed}, got {chosen} {value!r}: "
                             f"{value!r} does not use it; drop `--{name}`{back}.")


def hub_errors() -> tuple[type, ...]:
    """What the Hub client raises for an unreachable or refusing server: the HTTP library's transport errors
    (`httpx` or, in newer huggingface_hub, `httpx2`: connection refused, timeouts) and `HfHubHTTPError` (401, 403,
    404, ...). Neither is a `ConnectionError`, so they left a traceback."""
    errors = []
    for name in ("httpx", "httpx2"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    try:
        from huggingface_hub.errors import HfHubHTTPError

        errors.append(HfHubHTTPError)
    except ImportError:
        pass
    return tuple(errors)


USER_ERRORS = (ValueError, ConnectionError)


def run(main, argv: list[str] | None = None) -> None:
    """Run a script's `main(argv)`. A user error (`ValueError`, which every argument check raises, a
    `ConnectionError`, or the Hub client's errors for an unreachable or refusing server) ends the script with one line
    on stderr, `<script>: error: <message>`, and exit status 2 for bad input (a `ValueError`: a bad argument or config,
    also when a check after parsing finds it, e.g. a model folder that does not hold a model) or 1 for anything else
    (an unreachable network or Hub); other exceptions are bugs and keep their traceback. `HF_SPECDEC_TRACEBACK=1` shows the traceback of user errors too."""
    hub = hub_errors()
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "hf-specdec"
    # A warning is one line too (Python's default adds the source line that raised it, e.g. `obj = dtype(**inputs)`).
    default_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *args, **kwargs: (
        f"{script}: warning: {' '.join(str(message).split())}\n")
    try:
        main(argv)
    except (*USER_ERRORS, *hub) as error:
        if os.environ.get("HF_SPECDEC_TRACEBACK") == "1":
            raise
        message = " ".join(str(error).split())
        if isinstance(error, hub) and not isinstance(error, USER_ERRORS + (OSError,)):  # a transport error
            from huggingface_hub import constants

            message = (f"cannot reach the Hub at {constants.ENDPOINT} ({type(error).__name__}: {message}): check the "
                       "network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only what is cached")
        print(f"{script}: error: {message}", file=sys.stderr)
        sys.exit(2 if isinstance(error, ValueError) else 1)
    finally:
        warnings.formatwarning = default_format
