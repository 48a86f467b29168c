"""System statistics lined up with training steps: CPU, RAM, this process's RSS and, on CUDA
machines with NVML, per-GPU utilisation, memory, temperature and power."""

from __future__ import annotations

import os

import psutil


class SystemMonitor:
    def __init__(self, use_gpu: bool):
        self.process = psutil.Process(os.getpid())
        self.process.cpu_percent(None)  # the first reading only primes the counter
        psutil.cpu_percent(None)
        self.gpus = _nvml_handles() if use_gpu else []

    def sample(self) -> dict:
        vm = psutil.virtual_memory()
        stats = {
            "cpu_percent": psutil.cpu_percent(None),
            "process_cpu_percent": self.process.cpu_percent(None),
            "rss_mb": round(self.process.memory_info().rss / 2**20, 1),
            "ram_used_percent": vm.percent,
        }
        if self.gpus:
            stats["gpus"] = [_gpu_stats(i, h) for i, h in self.gpus]
        return stats


class LiveStats:
    """This machine now, and a trainer process by its pid: what a watching TUI reads itself, since a
    run's `sys` records stop with the run (and a paused run writes none). A CPU percentage is measured
    between two readings, so the first reading of each has none."""

    def __init__(self):
        self._gpus: list | None = None  # NVML is opened on the first reading
        self._process: psutil.Process | None = None
        self._cpu_primed = False

    def machine(self) -> dict:
        cpu = psutil.cpu_percent(None)
        stats = {
            "cpu_percent": cpu if self._cpu_primed else None,
            "ram_used_percent": psutil.virtual_memory().percent,
        }
        self._cpu_primed = True
        if self._gpus is None:
            self._gpus = _nvml_handles()
        if self._gpus:
            stats["gpus"] = [_gpu_stats(i, h) for i, h in self._gpus]
        return stats

    def process(self, pid: int) -> dict | None:
        """CPU and RSS of process `pid`; None when there is no such process (or it may not be read)."""
        try:
            fresh = self._process is None or self._process.pid != pid
            if fresh:
                self._process = psutil.Process(pid)
            with self._process.oneshot():
                cpu = self._process.cpu_percent(None)
                rss = self._process.memory_info().rss
            return {"process_cpu_percent": None if fresh else cpu, "rss_mb": round(rss / 2**20, 1)}
        except (psutil.Error, ValueError):  # ended, or another user's process
            self._process = None
            return None


def _nvml_handles() -> list:
    try:
        import pynvml  # provided by nvidia-ml-py (the `gpu` extra)

        pynvml.nvmlInit()
        return [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no NVML library, no driver, or no permission: GPU stats are simply absent
        return []


def _gpu_stats(index: int, handle) -> dict:
    import pynvml

    out = {"index": index}
    readers = {
        "util_percent": lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
        "mem_used_mb": lambda: round(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20),
        "mem_total_mb": lambda: round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20),
        "temp_c": lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        "power_w": lambda: round(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000, 1),
    }
    for key, read in readers.items():
        try:
            out[key] = read()
        except Exception:  # a field this GPU or driver does not report
            pass
    return out
