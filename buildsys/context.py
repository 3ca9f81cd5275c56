"""The contract between the engine and a recipe: what a stage function receives.

A recipe is a plain function ``def stage(ctx: StageContext) -> None`` that reads only what the
context names (its declared inputs, its model, its params) and writes files under ``ctx.out``.
Everything random must come from ``ctx.rng(...)`` or ``ctx.torch_generator(...)``: those are
seeded from the action's seed, the stage name and the stream name, so two runs of the same action
draw the same numbers and two streams of one stage never share a sequence.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from buildsys.keys.seeds import derive_seed

if TYPE_CHECKING:
    import logging

    import numpy
    import torch

ProgressFn = Callable[[int, "int | None", str], None]


class RecipeError(Exception):
    """A recipe rejects its inputs or params; the message names the file or field at fault."""


class BudgetExceeded(RecipeError):
    """A recipe stopped itself because its declared budget ran out."""


def _recipe_log() -> logging.Logger:
    import logging  # only where a recipe runs: the CLI imports this module for Budget alone

    return logging.getLogger("buildsys.recipe")


@dataclass(frozen=True)
class Budget:
    """Limits of one stage. ``iterations`` is handed to the recipe (and enters the action key);
    seconds and memory are enforced by the engine from outside the worker, ``processes`` (the
    most processes and threads at once) by the kernel in a confined worker."""

    seconds: float | None = None
    memory_mb: int | None = None
    iterations: int | None = None
    processes: int | None = None


def _no_progress(done: int, total: int | None, message: str) -> None:
    return None


@dataclass
class StageContext:
    """Everything a recipe may use.

    ``inputs`` maps each declared input name to a read-only directory holding that input's files
    (an upstream stage's whole output tree, or the matched source files under their paths
    relative to the project). ``model`` is the checkpoint directory of the stage's declared model.
    ``out`` is an empty directory; every file written there becomes the stage's output.
    """

    stage: str
    target: str
    inputs: dict[str, Path]
    params: dict[str, Any]
    seed: int
    out: Path
    model: Path | None = None
    budget: Budget = field(default_factory=Budget)
    mode: str = "deterministic"
    device: str = "cpu"
    threads: int = 1
    report: ProgressFn = _no_progress
    log: logging.Logger = field(default_factory=_recipe_log)
    warnings: list[str] = field(default_factory=list)

    @property
    def deterministic(self) -> bool:
        return self.mode != "stochastic"

    def input_dir(self, name: str) -> Path:
        try:
            return self.inputs[name]
        except KeyError:
            raise RecipeError(
                f"stage {self.stage!r} has no input named {name!r} (declared: {sorted(self.inputs)})"
            ) from None

    def input_files(self, name: str, suffixes: tuple[str, ...] = ()) -> list[Path]:
        """The files of one input, sorted by relative path, optionally filtered by suffix."""
        root = self.input_dir(name)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if suffixes:
            files = [p for p in files if p.suffix.lower() in suffixes]
        return files

    def input_file(self, name: str, suffixes: tuple[str, ...] = ()) -> Path:
        """The single file of an input; an error names the input when there are none or several."""
        files = self.input_files(name, suffixes)
        if len(files) != 1:
            wanted = f" with suffix {'/'.join(suffixes)}" if suffixes else ""
            raise RecipeError(
                f"stage {self.stage!r}: input {name!r} must hold exactly one file{wanted}, "
                f"found {len(files)}: {[str(p.relative_to(self.input_dir(name))) for p in files]}"
            )
        return files[0]

    def param(self, name: str, default: Any = None, kind: type | tuple[type, ...] | None = None) -> Any:
        """A param with a type check whose error names the stage and the field."""
        value = self.params.get(name, default)
        if kind is not None and value is not None and not isinstance(value, kind):
            if not (kind is float and isinstance(value, int) and not isinstance(value, bool)):
                names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
                raise RecipeError(
                    f"stage {self.stage!r}: params.{name} must be {names}, got {type(value).__name__} {value!r}"
                )
        return value

    def seed_for(self, stream: str) -> int:
        """A 63-bit seed for one named random stream of this stage.

        Derived from what the action key holds (seed, stage name), never from the target name,
        so two targets running the same action draw the same numbers and may share its output.
        """
        return derive_seed(self.seed, self.stage, stream)

    def rng(self, stream: str = "default") -> "numpy.random.Generator":
        import numpy

        return numpy.random.Generator(numpy.random.PCG64(self.seed_for(stream)))

    def torch_generator(self, stream: str = "default", device: str = "cpu") -> "torch.Generator":
        """A seeded generator for one named stream, on the CPU unless ``device`` says otherwise.
        A CUDA generator gives other numbers than a CPU one from the same seed: drawing on the CPU
        and moving the draws to ``ctx.torch_device()`` keeps a stage's random choices the same on
        every device."""
        import torch

        from buildsys.determinism import apply_torch_settings

        apply_torch_settings(self.mode, self.threads)
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed_for(stream))
        return generator

    def torch_device(self) -> "torch.device":
        """The stage's device, checked: a stage declared for CUDA on a machine whose torch sees
        no CUDA device (a CPU build of torch, a hidden GPU) fails here, saying so, rather than
        deep inside the first tensor operation."""
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise RecipeError(
                f"stage {self.stage!r}: device is 'cuda' but torch {torch.__version__} sees no CUDA device; "
                "declare device = \"cpu\" or \"auto\", or install a CUDA build of torch"
            )
        return torch.device(self.device)

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        self.report(done, total, message)

    def warn(self, message: str) -> None:
        """Something the user must hear although the stage succeeded (a missing texture, a face
        budget not met). Written to the stage log and kept in the action record, so the summary
        of every build that uses this result, fresh or cached, says it again."""
        self.warnings.append(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)

    @property
    def max_iterations(self) -> int | None:
        return self.budget.iterations
