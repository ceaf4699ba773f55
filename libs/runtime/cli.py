"""Settings on the command line: every field of a settings class becomes ``--option``.

The help text of each option names its environment variable and default, so
``fleetgate <service> --help`` documents the service. Options given on the command line win
over the environment.
"""

from __future__ import annotations

import argparse
from typing import Any, TypeVar, get_args

from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def add_settings_arguments(
    parser: argparse.ArgumentParser,
    settings: type[BaseSettings],
    prefix: str = "",
    title: str = "settings (command line or environment)",
) -> None:
    """One ``--option`` per field; ``prefix`` (``camera_``) keeps the options of a
    sub-settings class apart (``--camera-port``)."""
    env_prefix = str(settings.model_config.get("env_prefix", ""))
    group = parser.add_argument_group(title)
    for name, field in settings.model_fields.items():
        option = "--" + (prefix + name).replace("_", "-")
        env = (env_prefix + name).upper()
        default = "computed" if field.default_factory is not None else field.default
        text = f"{field.description or name} [env {env}; default {default!r}]"
        kwargs: dict[str, Any] = {
            "dest": f"setting_{prefix}{name}",
            "default": argparse.SUPPRESS,  # absent: the environment or the default applies
            "help": text,
        }
        if field.annotation is bool or bool in get_args(field.annotation):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = name.split("_")[-1].upper()
        group.add_argument(option, **kwargs)


def settings_from_args(settings: type[S], args: argparse.Namespace, prefix: str = "") -> S:
    overrides = {
        name: value
        for name in settings.model_fields
        if (value := getattr(args, f"setting_{prefix}{name}", None)) is not None
    }
    return settings(**overrides)
