"""Recipe fixtures for the verify, diff and hand-off tests.

Each ``leak_*`` recipe breaks the determinism contract in exactly one way, so verify must catch
it and name its stage; the file kinds are chosen so that the artifact diff shows the matching
measures (.npy: array measures, .json: key diff, .png: image measures and a heat map). The
``sensitive_*`` recipes are deterministic under the contract and diverge only when one
``verify --vary`` variation changes what they (wrongly) depend on. The rest are well-behaved
stages for pipelines.
"""

from __future__ import annotations

import json
import os
import threading
import time

from buildsys.context import StageContext


def _json(ctx: StageContext, name: str, value: object) -> None:
    (ctx.out / name).write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


def _npy(ctx: StageContext, name: str, array: object) -> None:
    import numpy as np

    np.save(ctx.out / name, np.asarray(array))


# --------------------------------------------------------------------------- well-behaved


def make_base(ctx: StageContext) -> None:
    """A deterministic source stage: seeded numbers, plus the declared source files copied."""
    rng = ctx.rng("base")
    _npy(ctx, "base.npy", rng.standard_normal(int(ctx.param("size", 32))))
    for name in ctx.inputs:
        for path in ctx.input_files(name):
            (ctx.out / path.name).write_bytes(path.read_bytes())


def echo_params(ctx: StageContext) -> None:
    """Writes its params: changing a param changes the key and the output."""
    _json(ctx, "params.json", {"params": ctx.params, "seed": ctx.seed})


def summarize(ctx: StageContext) -> None:
    """Deterministic consumer: a digest of every input file's bytes, so any upstream
    divergence propagates into this stage's output."""
    import hashlib

    rows = {}
    for name in sorted(ctx.inputs):
        for path in ctx.input_files(name):
            rows[f"{name}/{path.relative_to(ctx.input_dir(name)).as_posix()}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    _json(ctx, "summary.json", rows)


def count_files(ctx: StageContext) -> None:
    """Deterministic consumer that ignores its input's content: absorbs upstream divergence."""
    _json(ctx, "count.json", {name: len(ctx.input_files(name)) for name in sorted(ctx.inputs)})


def creative(ctx: StageContext) -> None:
    """A stochastic stage drawing from the context's seeded generator (reproducible in practice)."""
    rng = ctx.rng("creative")
    _npy(ctx, "field.npy", rng.standard_normal((8, 8)).astype("float32"))


def finalize(ctx: StageContext) -> None:
    """Deterministic finalization: a tiny mesh and an array derived from the creative field."""
    import numpy as np

    field = np.load(ctx.input_file("field", (".npy",)))
    heights = np.cumsum(field, axis=0).astype("float32")
    _npy(ctx, "heights.npy", heights)
    scale = float(ctx.param("scale", 1.0))
    lines = ["ply", "format ascii 1.0", "element vertex 3", "property float x", "property float y", "property float z",
             "element face 1", "property list uchar int vertex_indices", "end_header"]
    lines += [f"{scale * heights[0, 0]:.6f} 0 0", f"0 {scale:.6f} 0", "0 0 1", "3 0 1 2"]
    (ctx.out / "asset.ply").write_text("\n".join(lines) + "\n", encoding="ascii")


def validate(ctx: StageContext) -> None:
    """A gate: report.json with passed/failures, like recipes/validate."""
    import numpy as np

    heights = np.load(ctx.input_dir("asset") / "heights.npy")
    finite = bool(np.isfinite(heights).all())
    _json(ctx, "report.json", {"passed": finite, "failures": [] if finite else [{"gate": "finite", "message": "NaN"}]})


def use_model(ctx: StageContext) -> None:
    """Reads its checkpoint: a stage whose model the registry may refuse for hand-off."""
    files = sorted(p.name for p in ctx.model.rglob("*") if p.is_file()) if ctx.model else []
    _json(ctx, "model.json", {"files": files, "weight": (ctx.model / "weights.txt").read_text() if ctx.model else None})


# --------------------------------------------------------------------------- contract breakers


def leak_clock(ctx: StageContext) -> None:
    """Output depends on the wall clock."""
    _json(ctx, "stamp.json", {"built_at_ns": time.time_ns(), "value": 1})


def leak_urandom_png(ctx: StageContext) -> None:
    """Output depends on os.urandom: a noise image."""
    from PIL import Image

    size = 16
    Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)).save(ctx.out / "noise.png")


def leak_thread_race(ctx: StageContext) -> None:
    """A float reduction accumulated in the order worker threads finish: scheduling decides
    the rounding. The running sums are written, so any change of order shows."""
    import numpy as np

    values = ctx.rng("race").standard_normal(16) * np.logspace(-6, 6, 16)
    finished: list[float] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        time.sleep((time.perf_counter_ns() % 1000) / 500_000)  # jitter: lets the scheduler reorder
        with lock:
            finished.append(float(values[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(values))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    running, total = [], 0.0
    for v in finished:
        total += v
        running.append(total)
    _npy(ctx, "sum.npy", np.array(running, dtype="float64"))


def leak_set_order(ctx: StageContext) -> None:
    """Iterates a set of strings: the order depends on PYTHONHASHSEED (pinned by the contract,
    so only ``--vary hashseed`` shows it)."""
    names = {f"part-{i:02d}" for i in range(24)}
    _json(ctx, "order.json", {"parts": list(names)})


def leak_cwd(ctx: StageContext) -> None:
    """Records the working directory (a fresh sandbox path every run)."""
    _json(ctx, "where.json", {"cwd": os.getcwd()})


def leak_environment(ctx: StageContext) -> None:
    """Records the environment's variable names and LANG (fixed by the contract, so only
    ``--vary env`` shows it)."""
    _json(ctx, "env.json", {"names": sorted(os.environ), "lang": os.environ.get("LANG")})


def leak_unseeded_numpy(ctx: StageContext) -> None:
    """numpy.random.default_rng() without a seed draws from OS entropy."""
    import numpy as np

    _npy(ctx, "noise.npy", np.random.default_rng().standard_normal(64))


def sensitive_timezone(ctx: StageContext) -> None:
    """Formats a fixed instant in local time: depends on TZ."""
    _json(ctx, "local.json", {"epoch": time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(0))})


def sensitive_umask(ctx: StageContext) -> None:
    """Records the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    _json(ctx, "umask.json", {"umask": oct(mask)})


def sensitive_threads(ctx: StageContext) -> None:
    """A chunked float32 reduction with one chunk per thread: the same bytes at the same thread
    count, other bytes at another (what 'deterministic' allows and 'strict' forbids)."""
    import numpy as np

    values = ctx.rng("chunks").standard_normal(100_003).astype("float32") * np.float32(1000.5)
    total = np.float32(0.0)
    for chunk in np.array_split(values, ctx.threads):
        total = np.float32(total + chunk.sum(dtype="float32"))
    _npy(ctx, "mean.npy", np.array([total / np.float32(values.size)], dtype="float32"))


def sensitive_cwd_depth(ctx: StageContext) -> None:
    """Records how deep the working directory is: the sandbox name changes every run, its
    depth only under ``--vary cwd``."""
    from pathlib import Path

    _json(ctx, "depth.json", {"depth": len(Path.cwd().parts)})


# --------------------------------------------------------------------------- probes


def observe_variations(ctx: StageContext) -> None:
    """Writes, per ``verify --vary`` variation, what a recipe can see of it: each variation must
    change its own entry and no other."""
    import locale
    from pathlib import Path

    mask = os.umask(0)
    os.umask(mask)
    before = locale.setlocale(locale.LC_ALL)
    locale.setlocale(locale.LC_ALL, "")  # what a library that honours the user's locale does
    try:
        seen_locale = [locale.setlocale(locale.LC_ALL), locale.localeconv()["decimal_point"], time.strftime("%A", time.gmtime(0))]
    finally:
        locale.setlocale(locale.LC_ALL, before)
    _json(ctx, "observed.json", {
        "threads": {"ctx": ctx.threads, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "env": {"names": sorted(os.environ), "locale": seen_locale},
        "cwd": {"depth": len(Path.cwd().parts)},
        "tz": {"epoch": time.strftime("%Y-%m-%d %H:%M %z", time.localtime(0))},
        "umask": {"umask": oct(mask)},
        "hashseed": {"hash": hash("buildsys")},
    })


_CALLS = [0]


def leak_worker_history(ctx: StageContext) -> None:
    """Depends on how many jobs its worker process ran before (state kept between jobs, as some
    native libraries do): the first run in a worker matches, the second does not."""
    _CALLS[0] += 1
    _json(ctx, "history.json", {"second_run_in_this_worker": _CALLS[0] == 2})


def jittery_training(ctx: StageContext) -> None:
    """A small torch model trained for five steps, deterministic but for one layer that, from
    step 3 on, adds noise seeded from the OS's entropy (not the pid: a confined worker's pid is
    the same on every run): ``verify --bisect`` must name that layer."""
    import numpy as np
    import torch

    noise_seed = int.from_bytes(os.urandom(8), "little")

    class Jitter(torch.nn.Module):
        active = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.active:
                return x
            return x + 1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(noise_seed))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), Jitter(), torch.nn.Linear(16, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    gen = ctx.torch_generator("data")
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    data, target = torch.randn(32, 8, generator=gen), torch.randn(32, 4, generator=gen)
    steps = 5
    for step in range(1, steps + 1):
        ctx.progress(step, steps)
        net.body[2].active = step >= 3
        loss = ((net(data) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    np.save(ctx.out / "weights.npy", weights.numpy())


def hooks_seen(ctx: StageContext) -> None:
    """What a torch recipe finds installed when nobody bisects: no hooks, no dispatch mode."""
    import sys

    import torch
    import torch.nn.modules.module as nn_module

    _json(ctx, "hooks.json", {
        "forward_hooks": len(nn_module._global_forward_hooks), "forward_pre_hooks": len(nn_module._global_forward_pre_hooks),
        "dispatch_modes": torch._C._len_torch_dispatch_stack(), "recorder_loaded": "buildsys.execution.trace" in sys.modules,
    })
