"""Where a training step's time goes: ``python benchmarks/bench.py profile``.

``torch.profiler`` with ``record_shapes=True`` and ``with_stack=True`` over a few steps of the
engine's step (``Trainer.train_step``), then every kernel is attributed to what launched it: the
innermost operator (``aten::copy_``, ``aten::add_``, a compiled region), its input shapes and
strides (strides that differ between input and output are layout conversions) and the Python lines
of the project (or the peer) it came from. On a GPU the device time of each kernel counts; on the CPU
(the rehearsal) the operators' own CPU time does, so the same report works on both.

Graph replay hides who launched a kernel, so the profile runs the step without the CUDA graph
(``mode="compile"`` on a GPU: the same kernels as ``graph+compile``, launched one by one).
"""

from __future__ import annotations

from collections import defaultdict

import torch

PROJECT_FRAMES = ("ddpm_lib", "benchmarks", "denoising_diffusion_pytorch", "diffusers")
COPY_OPS = ("aten::copy_", "aten::_to_copy", "aten::clone", "aten::contiguous")


def _strides(event) -> list:
    return list(getattr(event, "structured_input_strides", None) or [])


def _project_lines(event) -> list[str]:
    """The project's source lines an event was called from, innermost first: its recorded stack (older
    torch) or its Python-function parents (newer torch records frames as events)."""
    frames = list(event.stack or [])
    parent = event.cpu_parent
    while parent is not None:
        frames.append(parent.name)
        parent = parent.cpu_parent
    return [frame for frame in frames if "(" in frame and any(key in frame for key in PROJECT_FRAMES)][:3]


def _forward_lines(events) -> dict[int, list[str]]:
    """The project's source lines of each forward operator, by its autograd sequence number: backward
    operators run in the autograd engine, without a Python stack of their own."""
    lines = {}
    for event in events:
        sequence = getattr(event, "sequence_nr", -1)
        if sequence is not None and sequence >= 0 and sequence not in lines and "Backward" not in event.name:
            found = _project_lines(event)
            if found:
                lines[sequence] = found
    return lines


def _site(event, forward: dict[int, list[str]]) -> dict:
    """The operator, shapes, strides and the project's stack lines of one profiled event; a backward
    operator gets its forward operator's lines, marked "backward of"."""
    lines, parent = None, event
    while lines is None and parent is not None:  # up to the autograd node running it: its forward's lines
        if "Backward" in parent.name and getattr(parent, "sequence_nr", -1) in forward:
            lines = [f"backward of {line}" for line in forward[parent.sequence_nr]]
        parent = parent.cpu_parent
    lines = lines or _project_lines(event)
    return {"op": event.name, "shapes": [list(s) for s in (event.input_shapes or [])][:3],
            "strides": _strides(event)[:3], "stack": lines}


def _operator(event):
    """The innermost ``aten::`` operator an event belongs to (itself, or its nearest parent)."""
    while event is not None and not event.name.startswith("aten::"):
        event = event.cpu_parent
    return event


def is_layout_conversion(site: dict) -> bool:
    """A copy whose source and destination have the same shape but different strides."""
    strides = [s for s in site["strides"] if s]
    shapes = [s for s in site["shapes"] if s]
    return (site["op"] in COPY_OPS and len(strides) >= 2 and len(shapes) >= 2 and shapes[0] == shapes[1]
            and strides[0] != strides[1])


def attribute(events, steps: int, device_kind: str, top: int = 8, sites: int = 3) -> dict:
    """The top kernels (GPU) or operators (CPU) of a profile, each with its launch sites.

    Returns {"what": "kernels" | "cpu operators", "total_ms_per_step", "top": [{"name", "share",
    "calls_per_step", "ms_per_step", "sites": [{"op", "shapes", "strides", "stack", "share_of_kernel",
    "calls_per_step"}]}], "layout_conversions": {"calls_per_step", "share"}}.
    """
    time_of = defaultdict(float)  # name -> microseconds
    calls = defaultdict(int)
    by_site = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))
    site_of = {}
    layout_time = 0.0
    layout_calls = 0
    forward = _forward_lines(events)
    for event in events:
        if device_kind == "cuda":
            pieces = [(kernel.name, kernel.duration) for kernel in getattr(event, "kernels", [])]
        elif event.name.startswith("aten::"):
            pieces = [(event.name, event.self_cpu_time_total)]
        else:
            pieces = []
        if not pieces:
            continue
        operator = _operator(event) or event
        site = _site(operator, forward)
        key = repr((site["op"], site["shapes"], site["strides"], site["stack"]))
        site_of[key] = site
        conversion = is_layout_conversion(site)
        for name, duration in pieces:
            time_of[name] += duration
            calls[name] += 1
            entry = by_site[name][key]
            entry[0] += duration
            entry[1] += 1
            if conversion:
                layout_time += duration
                layout_calls += 1
    total = sum(time_of.values()) or 1.0
    ranked = sorted(time_of, key=time_of.get, reverse=True)[:top]
    report = []
    for name in ranked:
        where = sorted(by_site[name].items(), key=lambda item: item[1][0], reverse=True)[:sites]
        report.append({"name": name[:120], "share": round(time_of[name] / total, 4),
                       "calls_per_step": round(calls[name] / steps, 1),
                       "ms_per_step": round(time_of[name] / steps / 1e3, 3),
                       "sites": [{**site_of[key], "share_of_kernel": round(spent / time_of[name], 3),
                                  "calls_per_step": round(count / steps, 1)} for key, (spent, count) in where]})
    return {"what": "kernels" if device_kind == "cuda" else "cpu operators",
            "total_ms_per_step": round(total / steps / 1e3, 3), "top": report,
            "layout_conversions": {"calls_per_step": round(layout_calls / steps, 1),
                                   "share": round(layout_time / total, 4)}}


def profile_steps(step, device: torch.device, steps: int = 5, top: int = 8) -> dict:
    """Profile ``steps`` calls of ``step`` (warm already) with shapes and stacks; :func:`attribute` them."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True, with_stack=True) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return {"steps": steps, **attribute(prof.events(), steps, device.type, top)}
