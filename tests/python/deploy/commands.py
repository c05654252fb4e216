"""What a container is told, checked against modelbench itself: its
arguments parse with the real command line, its MODELBENCH_* variables are
fields of Settings (a misspelt one is ignored silently, so nothing else would
notice), and the models file or gateway config it reads loads."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from unittest import mock

from pydantic import ValidationError

from modelbench.cli.main import build_parser
from modelbench.config import ModelsFile, Settings, load_models_file
from modelbench.server.uvicorn_runner import SHUTDOWN_GRACE_S

__all__ = ["SHUTDOWN_GRACE_S", "check_config_file", "parse", "settings_problems"]


def parse(args: list[str]) -> argparse.Namespace:
    """``modelbench <args>`` as the CLI reads it (SystemExit on a bad flag)."""
    return build_parser().parse_args(args)


def settings_problems(environment: Mapping[str, str | None]) -> list[str]:
    """What is wrong with a container's MODELBENCH_* variables: names that are
    no Settings field, values Settings refuses (read as the server reads them,
    from the environment). A value of None (from a Secret) is only named."""
    prefix = "MODELBENCH_"
    ours = {n: v for n, v in environment.items() if n.startswith(prefix)}
    fields = set(Settings.model_fields)
    problems = [f"{n} is no setting" for n in ours if n[len(prefix) :].lower() not in fields]
    values = {n: v for n, v in ours.items() if v is not None}
    with mock.patch.dict(os.environ, values):
        try:
            Settings()
        except ValidationError as exc:
            problems += [f"{e['loc']}: {e['msg']}" for e in exc.errors()]
    return problems


def check_config_file(command: str, path: Path) -> ModelsFile:
    """Load ``path`` as ``modelbench serve --models-file`` or ``modelbench
    gateway --config`` would (ValueError saying what is wrong): what it serves."""
    if command == "serve":
        load_models_file(path)
        settings = Settings(models_file=path, registry="file")
    else:
        settings = Settings(
            models_file=path, serve_default_model=False, registry_models=False, registry="file"
        )
    return settings.model_configs()
