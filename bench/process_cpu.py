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


def _parent_pid(pid: str) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _role(module: str) -> str:
    # Children run `-m embedserve.<role>`; the queue owner (`-m embedserve.router.owner`,
    # --router-workers >= 2) is router work.
    role = module.removeprefix("embedserve.")
    return "router" if role == "router.owner" else role


def role_pids(launcher_pid: int) -> dict[str, list[int]]:
    """Children of the launcher `launcher_pid`, by the role in their command line
    (`python -m embedserve.<role> <name>`; their configuration is not in argv)."""
    found: dict[str, list[int]] = {role: [] for role in ROLES}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if _parent_pid(entry.name) != launcher_pid:
                continue
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if "-m" in args[:-1] and (role := _role(args[args.index("-m") + 1])) in found:
            found[role].append(int(entry.name))
    return found


@dataclass
class CpuMeter:
    launcher_pid: int
    _start: dict[int, float] = field(default_factory=dict)
    _pids: dict[str, list[int]] = field(default_factory=dict)
    _launcher_start: float = 0.0

    def start(self) -> None:
        self._pids = role_pids(self.launcher_pid)
        self._start = {pid: _cpu_seconds(pid) for pids in self._pids.values() for pid in pids}
        self._launcher_start = _cpu_seconds(self.launcher_pid)

    def seconds_spent(self) -> dict[str, float]:
        """CPU seconds per role since start(), plus the launcher's own (supervision)."""
        spent = {role: sum(_cpu_seconds(pid) - self._start[pid] for pid in pids) for role, pids in self._pids.items()}
        spent["launcher"] = _cpu_seconds(self.launcher_pid) - self._launcher_start
        return spent

    def cores_used(self, wall_seconds: float) -> dict[str, float]:
        """Average cores busy per role since start(); the busiest single process of a role too."""
        used: dict[str, float] = {}
        for role, pids in self._pids.items():
            spent = [_cpu_seconds(pid) - self._start[pid] for pid in pids]
            used[role] = round(sum(spent) / wall_seconds, 2)
            used[f"{role} busiest process"] = round(max(spent, default=0.0) / wall_seconds, 2)
        return used
