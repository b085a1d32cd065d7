"""Script arguments: dataclasses filled from a YAML file and the command line (the command line wins).

    python scripts/train_teacher.py configs/teacher/digits.yaml --max_steps 200 --output_dir /tmp/teacher

One YAML key is one dataclass field; `--help` lists every field with its help text.
"""

import sys

import yaml
from transformers import HfArgumentParser


def parse_args(dataclass_types, argv: list[str] | None = None, description: str | None = None):
    """Return one instance per dataclass type, from `[config.yaml] [--field value ...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types, description=description)
    if argv and argv[0].endswith((".yaml", ".yml")):
        with open(argv.pop(0)) as f:
            values = yaml.safe_load(f) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown keys in the YAML config: {unknown}. Run with --help for the fields.")
        parser.set_defaults(**values)
    instances = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    return instances
