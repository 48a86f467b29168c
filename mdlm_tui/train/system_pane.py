"""The machine: this one read live (a row per GPU through NVML, or "no GPU"; CPU and RAM), the
trainer's process read live by its pid while it runs here, and otherwise the run's last `sys`
record, labelled as such: a finished or paused run's numbers are not the machine's now."""

from __future__ import annotations

import socket

from mdlm_tui.common.readout import Readout

LIVE_EVERY_S = 2.0  # a CPU percentage needs a span to be measured over; the screen redraws meanwhile


def _field(value, unit: str, digits: int = 0) -> str:
    return f"{value:.{digits}f}{unit}" if isinstance(value, (int, float)) else "--"


def system_lines(machine: dict | None, trainer: dict | None = None, record: dict | None = None) -> list[str]:
    """`machine`: this machine now (core.telemetry.LiveStats.machine); `trainer`: the trainer's
    process now, when it runs here; `record`: the run's last `sys` record, shown when `trainer` is not."""
    if machine is None:
        lines = ["machine now: reading..."]
    else:
        gpus = machine.get("gpus") or []
        lines = []
        for gpu in gpus:
            used, total = gpu.get("mem_used_mb"), gpu.get("mem_total_mb")
            mem = (
                f"{used / 1024:.1f}/{total / 1024:.0f}G"
                if isinstance(used, (int, float)) and isinstance(total, (int, float)) and total
                else "--"
            )
            lines.append(
                f"GPU{gpu.get('index', '?')} {_field(gpu.get('util_percent'), '%'):>4} {mem} "
                f"{_field(gpu.get('temp_c'), 'C')} {_field(gpu.get('power_w'), 'W')}"
            )
        if not gpus:
            lines.append("no GPU")
        lines.append(
            f"machine now: CPU {_field(machine.get('cpu_percent'), '%'):>4}  RAM "
            f"{_field(machine.get('ram_used_percent'), '%')}"
        )
    if trainer is not None:
        lines.append(
            f"trainer now: CPU {_field(trainer.get('process_cpu_percent'), '%'):>4}  RSS "
            f"{_field(trainer.get('rss_mb'), ' MB')}"
        )
    elif isinstance(record, dict) and record:  # from a file: only what it holds
        lines.append("last record (not live):")
        lines.append(
            f"  trainer CPU {_field(record.get('process_cpu_percent'), '%')}  RSS "
            f"{_field(record.get('rss_mb'), ' MB')}"
        )
    return lines


class SystemPane(Readout):
    """Reads this machine every LIVE_EVERY_S; `follow` names the trainer to read, `show_stats` gives
    the run's last record."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.live = None
        self.machine: dict | None = None
        self.trainer: dict | None = None
        self.record: dict | None = None
        self.pid: int | None = None

    def on_mount(self) -> None:
        from core.telemetry import LiveStats  # psutil, and NVML where present

        self.live = LiveStats()
        self.read_live()
        self.set_interval(LIVE_EVERY_S, self.read_live)

    def follow(self, status: dict, live: bool) -> None:
        """Read the trainer's process while a trainer works on the run on this host."""
        pid = status.get("pid")
        here = live and status.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0
        if (pid if here else None) != self.pid:
            self.pid = pid if here else None
            self.trainer = self.live.process(pid) if here and self.live is not None else None

    def show_stats(self, sys: dict | None) -> None:
        self.record = sys
        self._show()

    def read_live(self) -> None:
        self.machine = self.live.machine()
        self.trainer = self.live.process(self.pid) if self.pid is not None else None
        self._show()

    def _show(self) -> None:
        self.show("\n".join(system_lines(self.machine, self.trainer, self.record)))
