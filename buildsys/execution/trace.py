"""Recording what a torch stage computes, call by call, for ``verify --bisect``.

Installed by the worker for one job, and only when the job asks for it (nothing is registered,
nor this module imported, otherwise): a global forward pre-hook and forward hook on every
``nn.Module`` (``torch.nn.modules.module.register_module_forward_hook``), so a recipe needs no
change, and with ``ops`` a ``TorchDispatchMode`` that also sees every aten operation, backward
ones included. Each module call or op appends one line to a JSON-lines trace: its index, the
training step (the last ``ctx.progress`` count), the kind, the module path (``Net.body.2``, named
by the attribute each module has in the module that called it) or the op with the module it ran
in, and a BLAKE3 digest of its output tensors' bytes.

Two more uses of the same recorder: ``reference`` (the digests of an earlier replay) makes it
compare as it goes and save the outputs of the first call that differs; ``capture`` saves the
outputs of one call by index. Either way the job stops right after saving (:class:`TraceDone`):
what follows a divergence is not needed.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import blake3


class TraceDone(Exception):
    """Raised once the call a trace was asked to save has been saved: the replay can stop."""


def _tensors(value: Any) -> list[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for key in sorted(value, key=str) for t in _tensors(value[key])]
    return [t for t in (getattr(value, name, None) for name in ("sample", "last_hidden_state", "logits")) if t is not None]


def _plain(tensor: Any) -> Any:
    """The tensor's values on the CPU, contiguous, without autograd history (None when it has
    no plain storage: sparse, quantized, meta)."""
    import torch

    if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type == "meta":
        return None
    return tensor.detach().to("cpu").contiguous()


def digest(tensors: list[Any]) -> str:
    """Of the shapes, dtypes and bytes (128 bits: a trace compares two replays, it keys nothing)."""
    import torch

    hasher = blake3.blake3()
    for tensor in tensors:
        plain = _plain(tensor)
        hasher.update(f"{tuple(tensor.shape)} {tensor.dtype};".encode())
        if plain is not None:
            hasher.update(plain.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:32]


class Recorder:
    """One job's trace. ``step()``: the current training step (the worker's progress count)."""

    def __init__(self, config: dict[str, Any], step: Callable[[], int]) -> None:
        self.config = config
        self.step = step
        self.calls = 0
        self.stack: list[tuple[Any, str]] = []
        self.handles: list[Any] = []
        self.mode: Any = None
        self.reference: list[str] | None = None
        self.busy = False  # hashing an output: the ops that takes are not the recipe's
        if config.get("reference"):
            with open(config["reference"], encoding="utf-8") as handle:
                self.reference = [json.loads(line)["digest"] for line in handle]
        self.out = open(config["path"], "w", encoding="utf-8")  # noqa: SIM115 - closed by stop()

    def start(self) -> None:
        import torch.nn.modules.module as nn_module

        self.handles = [
            nn_module.register_module_forward_pre_hook(self._enter),
            nn_module.register_module_forward_hook(self._leave),
        ]
        if self.config.get("ops"):
            self.mode = _op_mode(self)
            self.mode.__enter__()

    def stop(self) -> None:
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.mode = None
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.out.close()

    def _name(self, module: Any) -> str:
        if not self.stack:
            return type(module).__name__
        parent, parent_name = self.stack[-1]
        child = next((n for n, m in parent._modules.items() if m is module), None)
        return f"{parent_name}.{child}" if child is not None else f"{parent_name}>{type(module).__name__}"

    def _enter(self, module: Any, args: Any) -> None:
        self.stack.append((module, self._name(module)))

    def _leave(self, module: Any, args: Any, output: Any) -> None:
        _, name = self.stack.pop() if self.stack else (module, type(module).__name__)
        self.record("module", name, type(module).__name__, output)

    def current_module(self) -> str:
        return self.stack[-1][1] if self.stack else "(no module: backward or functional code)"

    def record(self, kind: str, name: str, type_name: str, output: Any) -> None:
        tensors = _tensors(output)
        if not tensors or self.busy:
            return
        index, self.calls = self.calls, self.calls + 1
        self.busy = True
        try:
            value = digest(tensors)
        finally:
            self.busy = False
        entry = {"call": index, "step": self.step(), "kind": kind, "name": name, "type": type_name, "digest": value,
                 "shapes": [list(t.shape) for t in tensors], "dtypes": [str(t.dtype).removeprefix("torch.") for t in tensors]}
        self.out.write(json.dumps(entry) + "\n")
        differs = self.reference is not None and (index >= len(self.reference) or self.reference[index] != value)
        if differs or self.config.get("capture") == index:
            self.busy = True
            self._save(tensors)
            raise TraceDone(f"trace: saved call {index} ({name})")

    def _save(self, tensors: list[Any]) -> None:
        from safetensors.torch import save_file

        plain = {str(i): p for i, p in enumerate(map(_plain, tensors)) if p is not None}
        save_file(plain, self.config["save"])
        self.out.flush()


def _op_mode(recorder: Recorder) -> Any:
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpRecorder(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            if not recorder.busy:
                recorder.record("op", f"{func} in {recorder.current_module()}", str(func.overloadpacket.__name__), out)
            return out

    return OpRecorder()
