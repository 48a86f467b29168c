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
