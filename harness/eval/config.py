"""The settings of a run that change its numbers (the model aside), checked when made."""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError
from harness.tasks.rows import DataOverrides


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run that changes its numbers (the model aside)."""

    tasks: str = "builtin"
    shots: tuple[int, ...] = (0,)
    templates: str = "all"
    limit: int | None = None
    seed: int = 1234
    chat: str = "auto"
    fewshot_multiturn: bool = True
    data_dirs: tuple[str, ...] = ()
    data_folders: tuple[tuple[str, str], ...] = ()

    @property
    def data_overrides(self) -> DataOverrides:
        return DataOverrides(self.data_dirs, self.data_folders)

    def __post_init__(self) -> None:
        if self.chat not in ("auto", "on", "off"):
            raise HarnessError(f"--chat must be auto, on or off, got {self.chat!r}")
        if any(k < 0 for k in self.shots) or not self.shots:
            raise HarnessError(f"--shots must be non-negative integers, got {self.shots}")
        if self.limit is not None and self.limit < 1:
            raise HarnessError(f"--limit must be at least 1, got {self.limit}")
