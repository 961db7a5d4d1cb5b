"""Durable futures: what orchestration code awaits.

Orchestrations are driven by the replay executor, not by asyncio: awaiting a durable future
that is not resolved yet yields the future itself to the executor, which resumes the
coroutine once history resolves it. ``join`` and ``select`` are composite futures whose
outcome depends only on the order completions appear in history, never on wall-clock order.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class DurableFuture(Generic[T]):
    def __init__(self, description: str) -> None:
        self.description = description
        self._done = False
        self._result: Any = None
        self._exception: BaseException | None = None
        #: position in the turn's delivery order; decides select winners and join errors
        self._seq = 0

    def done(self) -> bool:
        return self._done

    def result(self) -> T:
        if not self.done():
            raise RuntimeError(f"{self.description} is not complete yet")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[no-any-return]

    def exception(self) -> BaseException | None:
        return self._exception if self.done() else None

    @property
    def completion_seq(self) -> int:
        return self._seq

    def _resolve(self, value: Any, seq: int) -> None:
        if not self._done:
            self._done, self._result, self._seq = True, value, seq

    def _fail(self, exc: BaseException, seq: int) -> None:
        if not self._done:
            self._done, self._exception, self._seq = True, exc, seq

    def __await__(self) -> Generator[Any, None, T]:
        if not self.done():
            yield self
        return self.result()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<DurableFuture {self.description} {state}>"


class ConvertedFuture(DurableFuture[T]):
    """``source``'s outcome passed through ``convert`` once it completes (typed results).

    A conversion that raises fails this future with that exception. The completion position is
    the source's, so ``join`` and ``select`` order it exactly as they would the source.
    """

    def __init__(self, source: DurableFuture[Any], convert: Callable[[Any], T]) -> None:
        super().__init__(source.description)
        self.source = source
        self._convert = convert

    def done(self) -> bool:
        if not self._done and self.source.done():
            seq = self.source.completion_seq
            exc = self.source.exception()
            if exc is not None:
                self._fail(exc, seq)
            else:
                try:
                    value = self._convert(self.source.result())
                except Exception as err:
                    self._fail(err, seq)
                else:
                    self._resolve(value, seq)
        return self._done


class JoinFuture(DurableFuture[list[Any]]):
    """Completes when every child has; results in argument order, first failure by history order."""

    def __init__(self, children: Sequence[DurableFuture[Any]]) -> None:
        super().__init__(f"join of {len(children)}")
        self.children = list(children)

    def done(self) -> bool:
        if not self._done and all(c.done() for c in self.children):
            failed = [c for c in self.children if c.exception() is not None]
            seq = max((c.completion_seq for c in self.children), default=0)
            if failed:
                first = min(failed, key=lambda c: c.completion_seq)
                exc = first.exception()
                assert exc is not None
                self._fail(exc, seq)
            else:
                self._resolve([c.result() for c in self.children], seq)
        return self._done


class SelectFuture(DurableFuture[tuple[int, Any]]):
    """Completes with ``(index, value)`` of the child that completed first in history order.

    If that child failed, awaiting the select raises its exception; the losers keep running
    and can still be awaited later.
    """

    def __init__(self, children: Sequence[DurableFuture[Any]]) -> None:
        if not children:
            raise ValueError("select needs at least one future")
        super().__init__(f"select of {len(children)}")
        self.children = list(children)

    def done(self) -> bool:
        if not self._done:
            finished = [(c.completion_seq, i) for i, c in enumerate(self.children) if c.done()]
            if finished:
                seq, index = min(finished)
                winner = self.children[index]
                exc = winner.exception()
                if exc is not None:
                    self._fail(exc, seq)
                else:
                    self._resolve((index, winner.result()), seq)
        return self._done
