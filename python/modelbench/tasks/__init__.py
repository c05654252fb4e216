"""The task API's logic over an ``AsyncEngine``: generate, summarize,
sentiment, classify. Nothing here knows HTTP; the server's ``/v1/infer``
and notebooks call ``run_task`` alike."""

from modelbench.tasks.adapters import run_task
from modelbench.tasks.base import TaskInputError, TaskOutput

__all__ = ["TaskInputError", "TaskOutput", "run_task"]
