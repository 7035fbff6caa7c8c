"""Progress for long work: a tqdm bar on a terminal; in a file or a pipe (``textrnn train > log``,
CI) plain log lines instead, never a bar's carriage-return redraws."""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

log = logging.getLogger("textrnn")
T = TypeVar("T")


def on_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


class Progress:
    """``update(n, **postfix)`` as work is done. On a terminal a bar; elsewhere, with ``every``
    seconds given, one line at most that often (``desc: 12,000 rows done (3,100 rows/s)``), else
    nothing. Closes as a context manager."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "",
        enabled: bool = True,
        initial: int = 0,
        every: float | None = None,
        unit_scale: bool = False,
    ):
        self.enabled, self.every, self.desc, self.unit = enabled, every, desc, unit
        self.bar = None
        self.t0 = self.last = time.perf_counter()
        self.done = self.start = initial
        if enabled and on_terminal():
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, leave=False, dynamic_ncols=True)

    def update(self, n: int, **postfix: float) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in postfix.items()}, refresh=False)
        elif self.enabled and self.every is not None and time.perf_counter() - self.last >= self.every:
            self.last = time.perf_counter()
            rate = (self.done - self.start) / max(self.last - self.t0, 1e-9)
            log.info("%s: %s%s done (%s%s/s)", self.desc, f"{self.done:,}", self.unit, f"{rate:,.0f}", self.unit)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable[T], total: int, desc: str, unit: str = " texts", texts: int | None = None) -> Iterator[T] | Iterable[T]:
    """A bar around long work (``texts``, default ``total``, of 5,000 or more), on a terminal only
    and only when textrnn's logger speaks at INFO (the CLI's --quiet silences it); otherwise the
    iterable itself, at no cost."""
    if (total if texts is None else texts) < 5000 or not on_terminal() or not log.isEnabledFor(logging.INFO):
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
