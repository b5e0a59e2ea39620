"""Progress lines for long stages, and the per-stage timings that go into every record.

The engine knows nothing of pytest: it reports through a ``Progress`` whose ``write`` the
plugin connects to the terminal (with pytest's output capture suspended). Lines are rate
limited so a 1000-step loop prints a handful of updates, not a thousand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Stage:
    name: str
    total: int | None
    write: Callable[[str], None]
    interval_s: float
    done: int = 0
    started: float = field(default_factory=time.perf_counter)
    _last_print: float = field(default_factory=time.perf_counter)

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._last_print >= self.interval_s and (self.total is None or self.done
                                                          < self.total):
            self._last_print = now
            of = f"/{self.total}" if self.total else ""
            self.write(f"    {self.name}: {self.done}{of} {detail} ({now - self.started:.1f}s)")


class Progress:
    """Collects stage timings; prints a line at the start and end of every long stage."""

    def __init__(self, write: Callable[[str], None] | None = None, interval_s: float = 5.0) -> None:
        self.write = write or (lambda line: None)
        self.interval_s = interval_s
        self.timings: list[dict[str, object]] = []
        self.prefix = ""

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "steps") -> Iterator[Stage]:
        label = f"{self.prefix}{name}"
        self.write(f"  ▸ {label}" + (f" ({total} {unit})" if total else ""))
        stage = Stage(label, total, self.write, self.interval_s)
        failed: BaseException | None = None
        try:
            yield stage
        except BaseException as exc:
            failed = exc
            raise
        finally:
            seconds = time.perf_counter() - stage.started
            entry: dict[str, object] = {"stage": name, "seconds": round(seconds, 3)}
            if failed is None:
                self.write(f"    {label}: done in {seconds:.1f}s")
            else:
                kind = ("interrupted" if isinstance(failed, KeyboardInterrupt)
                        else f"failed ({type(failed).__name__})")
                entry["status"] = kind
                self.write(f"    {label}: {kind} after {seconds:.1f}s")
            self.timings.append(entry)

    def note(self, line: str) -> None:
        self.write(f"  · {self.prefix}{line}")

    def take_timings(self) -> list[dict[str, object]]:
        timings, self.timings = self.timings, []
        return timings
