"""How ``bench.py`` measures: the machine, timed windows, the GPU's clocks during them, progress.

* :func:`environment`: card, driver, torch, TF32 flags and the GPU's state, for every result file;
* :func:`timed_windows`: ``repeats`` windows of at least ``window`` seconds each, the rate of each;
* :class:`ClockSampler`: the SM and memory clocks, power and temperature read through NVML every
  ``period`` seconds *while* the windows run (a card that throttles shows it here); where there is
  no NVML (the CPU, a virtualised GPU) the row says so instead;
* :func:`peak_tflops` and :func:`mfu`: the card's dense bf16 peak and the share of it reached;
* :class:`Progress`: one line per case on stderr, with the elapsed time and an ETA.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import threading
import time

import torch

from ddpm_lib.device import device_name as device_name_of

# Dense bf16 tensor-core peaks in TFLOP/s, from the vendors' datasheets (the T4 has no bf16: its fp16
# peak), for MFU = achieved / peak. Looked up by the longest key the card's name contains.
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200 NVL": 835.0, "H200": 989.0,
                    "A100": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "T4": 65.0}
NO_CLOCKS = "not sampled: no NVML here"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return device_name_of(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    """What shapes the numbers: card, driver, torch, TF32 flags, and the GPU's state now."""
    info = {"device": device_name(device), "torch": torch.__version__,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if device.type == "cuda":
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["cuda"] = torch.version.cuda
        info.update(gpu_state(device))
    else:
        info["cpu_cores"], info["cpu_load_1min"] = os.cpu_count(), round(os.getloadavg()[0], 2)
    return info


def busy_warning(info: dict) -> str | None:
    """A warning when other work shares the CPU being measured (load above its core count)."""
    cores, load = info.get("cpu_cores"), info.get("cpu_load_1min")
    if cores and load is not None and load > cores:
        return (f"the CPU is busy (load {load} on {cores} cores): these numbers will be low and noisy; on a shared "
                f"machine OMP_NUM_THREADS=1 avoids threads waiting on each other")
    return None


def _nvml_handle(device: torch.device):
    import pynvml

    pynvml.nvmlInit()
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)


def gpu_state(device: torch.device) -> dict:
    """Clocks (MHz), power (W), temperature (C) and driver through NVML; {} where unavailable."""
    if device.type != "cuda":
        return {}
    try:
        nvml, handle = _nvml_handle(device)
        return {"driver": nvml.nvmlSystemGetDriverVersion(),
                "sm_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
                "max_sm_clock_mhz": nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM),
                "memory_clock_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
                "power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                "temperature_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)}
    except Exception:  # no NVML here (a virtualised GPU, no pynvml)
        return {}


class ClockSampler:
    """Reads the GPU's SM clock, memory clock, power and temperature every ``period`` seconds on a
    background thread between :meth:`start` and :meth:`stop`; :meth:`summary` gives min / median /
    max, or says why nothing was sampled."""

    def __init__(self, device: torch.device, period: float = 0.25):
        self.device, self.period = device, period
        self.samples: list[tuple[int, int, float, int]] = []
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ClockSampler:
        if self.device.type != "cuda":
            self.reason = f"{NO_CLOCKS} (CPU)"
            return self
        try:
            nvml, handle = _nvml_handle(self.device)
        except Exception as error:  # no pynvml, or no driver access
            self.reason = f"{NO_CLOCKS} ({type(error).__name__})"
            return self

        def poll() -> None:
            while not self._stop.is_set():
                try:
                    self.samples.append((nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
                                         nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM),
                                         nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                                         nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
                except Exception:  # a read failed: keep the others
                    pass
                self._stop.wait(self.period)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self.summary()

    def summary(self) -> dict:
        if not self.samples:
            return {"clocks": self.reason or f"{NO_CLOCKS} (no reading succeeded)"}
        sm, memory, power, temperature = zip(*self.samples)
        return {"clock_samples": len(sm), "sm_clock_mhz_min": min(sm), "sm_clock_mhz_median": statistics.median(sm),
                "sm_clock_mhz_max": max(sm), "memory_clock_mhz_median": statistics.median(memory),
                "power_w_median": round(statistics.median(power), 1), "temperature_c_max": max(temperature)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_windows(step, device: torch.device, window: float, repeats: int, warmup: int = 3,
                  batch: int = 1) -> list[float]:
    """Calls of ``step`` per second in each of ``repeats`` windows of at least ``window`` seconds,
    after ``warmup`` calls; ``batch`` calls between clock reads (a host sync each time)."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        sync(device)
        count, started = 0, time.perf_counter()
        while True:
            for _ in range(batch):
                step()
            count += batch
            sync(device)
            elapsed = time.perf_counter() - started
            if elapsed >= window:
                rates.append(count / elapsed)
                break
    return rates


def spread(values: list[float]) -> dict:
    """Median, min and max of per-window values, and how far the windows spread ((max - min) / median)."""
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values),
            "spread": round((max(values) - min(values)) / median, 4) if median else None}


def peak_tflops(name: str) -> float | None:
    """The card's dense bf16 peak (TFLOP/s), None for a CPU or an unknown card."""
    keys = sorted((key for key in PEAK_BF16_TFLOPS if key in name), key=len, reverse=True)
    return PEAK_BF16_TFLOPS[keys[0]] if keys and not name.startswith("CPU") else None


def mfu(gflop_per_image: float | None, images_per_s: float, peak: float | None) -> float | None:
    """Model FLOP utilisation in % of ``peak`` TFLOP/s (None without a FLOP count or a peak)."""
    if not gflop_per_image or not peak:
        return None
    return round(100.0 * gflop_per_image * images_per_s / 1e3 / peak, 2)


class Progress:
    """``[3/8 0:42, ETA 1:10] what`` on stderr before each case. The ETA counts the cases left at the
    mean time of those done (before any: ``guess`` seconds each)."""

    def __init__(self, total: int, guess: float, stream=None):
        self.total, self.guess, self.done = total, guess, 0
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()

    def eta(self) -> float:
        elapsed = time.perf_counter() - self.started
        per_case = elapsed / self.done if self.done else self.guess
        return per_case * (self.total - self.done)

    def show(self, what: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{self.done + 1}/{self.total} {_clock(elapsed)} elapsed, ETA {_clock(self.eta())}] {what}",
              file=self.stream, flush=True)

    def finish(self) -> None:
        self.done += 1


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
