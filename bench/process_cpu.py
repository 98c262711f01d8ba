"""CPU time the processes of one embedserve spent during a run, by role, read from
/proc: which part (router, tokenizer workers, backend) is the bottleneck."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("router", "tokenizer_pool", "backends")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime + stime


def role_pids(marker: str) -> dict[str, list[int]]:
    """Children of the server whose command line holds `marker` (its socket prefix)."""
    found: dict[str, list[int]] = {role: [] for role in ROLES}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for role in ROLES:
            if f"-m {role} " in cmdline and marker in cmdline:
                found[role].append(int(entry.name))
    return found


@dataclass
class CpuMeter:
    marker: str
    _start: dict[int, float] = field(default_factory=dict)
    _pids: dict[str, list[int]] = field(default_factory=dict)

    def start(self) -> None:
        self._pids = role_pids(self.marker)
        self._start = {pid: _cpu_seconds(pid) for pids in self._pids.values() for pid in pids}

    def cores_used(self, wall_seconds: float) -> dict[str, float]:
        """Average cores busy per role since start(); the busiest single process of a role too."""
        used: dict[str, float] = {}
        for role, pids in self._pids.items():
            spent = [_cpu_seconds(pid) - self._start[pid] for pid in pids]
            used[role] = round(sum(spent) / wall_seconds, 2)
            used[f"{role} busiest process"] = round(max(spent, default=0.0) / wall_seconds, 2)
        return used
