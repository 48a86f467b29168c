"""The trainer's machine from the latest metrics `sys` record: a row per GPU (NVML: utilisation,
memory, temperature, power) or "no GPU", then CPU, RAM and the trainer's RSS."""

from __future__ import annotations

from mdlm_tui.widgets.readout import Readout


def _field(value, unit: str, digits: int = 0) -> str:
    return f"{value:.{digits}f}{unit}" if isinstance(value, (int, float)) else "--"


def system_lines(sys: dict | None) -> list[str]:
    if not sys:
        return ["no system stats yet"]
    lines = []
    gpus = sys.get("gpus")
    gpus = [gpu for gpu in gpus if isinstance(gpu, dict)] if isinstance(gpus, list) else []  # from a file
    for gpu in gpus:
        used, total = gpu.get("mem_used_mb"), gpu.get("mem_total_mb")
        mem = f"{used / 1024:.1f}/{total / 1024:.0f}G" if isinstance(used, (int, float)) and isinstance(total, (int, float)) and total else "--"
        lines.append(f"GPU{gpu.get('index', '?')} {_field(gpu.get('util_percent'), '%'):>4} {mem} "
                     f"{_field(gpu.get('temp_c'), 'C')} {_field(gpu.get('power_w'), 'W')}")
    if not gpus:
        lines.append("no GPU (CPU training)")
    lines.append(f"CPU  {_field(sys.get('cpu_percent'), '%')}  trainer {_field(sys.get('process_cpu_percent'), '%')}")
    lines.append(f"RAM  {_field(sys.get('ram_used_percent'), '%')}  RSS {_field(sys.get('rss_mb'), ' MB')}")
    return lines


class SystemPane(Readout):
    def show_stats(self, sys: dict | None) -> None:
        self.show("\n".join(system_lines(sys)))
