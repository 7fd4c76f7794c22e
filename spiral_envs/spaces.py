"""The text space of observations and free-text moves, registered with Gymnasium's space utilities.

Gymnasium's ``Text`` holds characters of a fixed charset (letters and digits by default), and
its flattening and shared-memory functions look every character up in that charset: a space or
a bracket in an observation raises ``KeyError``. :class:`TextSpace` holds any Python string.
Gymnasium dispatches those functions on the space's type, so this module registers versions
for :class:`TextSpace` that store Unicode code points: ``FlattenObservation`` and
``AsyncVectorEnv(shared_memory=True)`` take any text, and reading a text back from shared
memory costs time in its own length, not in ``max_length``. (Gymnasium's own ``Text`` reads
its shared memory once, into a tuple that later steps never update.)
"""

from __future__ import annotations

import multiprocessing as mp
import string
from collections.abc import Sequence
from multiprocessing.sharedctypes import SynchronizedArray
from types import ModuleType
from typing import Any, overload

import numpy as np
from gymnasium import spaces
from gymnasium.spaces.utils import flatten, flatten_space, unflatten
from gymnasium.vector.utils.shared_memory import (
    create_shared_memory,
    read_from_shared_memory,
    write_to_shared_memory,
)

SAMPLE_CHARACTERS = string.ascii_letters + string.digits + " .,:[]->"
"""What :meth:`TextSpace.sample` draws from (``contains`` accepts every character)."""
SAMPLE_MAX_LENGTH = 32
"""Longest text :meth:`TextSpace.sample` draws when no length is asked for."""
PAD = 0x110000
"""One past the last Unicode code point: fills a flattened text after its end."""


class TextSpace(spaces.Text):
    """Any Python string of ``min_length`` to ``max_length`` characters.

    ``sample()`` draws at most :data:`SAMPLE_MAX_LENGTH` characters of
    :data:`SAMPLE_CHARACTERS` (which is what ``character_set`` lists), so random-action
    tools stay cheap; ``contains`` accepts any character. Flattened, a text is its code
    points (``int32``) padded with :data:`PAD` to ``max_length``.
    """

    def __init__(
        self, max_length: int, *, min_length: int = 0, seed: int | np.random.Generator | None = None
    ) -> None:
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARACTERS, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(
        self,
        mask: tuple[int | None, np.ndarray | None] | None = None,
        probability: tuple[int | None, np.ndarray | None] | None = None,
    ) -> str:
        """A random text; with no length given, at most :data:`SAMPLE_MAX_LENGTH` characters."""
        chosen = mask if mask is not None else probability
        length = None if chosen is None else chosen[0]
        if length is None:
            high = max(self.min_length, min(self.max_length, SAMPLE_MAX_LENGTH))
            length = int(self.np_random.integers(self.min_length, high + 1))
        if probability is not None:
            return super().sample(probability=(length, probability[1]))
        return super().sample(mask=(length, None if mask is None else mask[1]))

    def character_index(self, char: str) -> np.int32:
        """The code point of ``char``: what a flattened text holds."""
        return np.int32(ord(char))

    def __eq__(self, other: object, /) -> bool:
        return (
            isinstance(other, TextSpace)
            and self.min_length == other.min_length
            and self.max_length == other.max_length
        )

    def __repr__(self) -> str:
        return f"TextSpace({self.min_length}, {self.max_length}, any characters)"


def code_points(space: TextSpace, text: str) -> np.ndarray:
    """``text`` as ``int32`` code points; a text longer than the space raises ``ValueError``."""
    if len(text) > space.max_length:
        raise ValueError(f"a text of {len(text):,} characters does not fit {space}")
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.int32)


def from_code_points(codes: np.ndarray) -> str:
    """The text of ``int32`` code points (the inverse of :func:`code_points`)."""
    return codes.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")


@flatten.register(TextSpace)
def _flatten_text(space: TextSpace, x: str) -> np.ndarray:
    codes = code_points(space, x)
    flat = np.full(space.max_length, PAD, dtype=np.int32)
    flat[: len(codes)] = codes
    return flat


@unflatten.register(TextSpace)
def _unflatten_text(space: TextSpace, x: np.ndarray) -> str:
    x = np.asarray(x)
    return from_code_points(x[x < PAD])


@flatten_space.register(TextSpace)
def _flatten_space_text(space: TextSpace) -> spaces.Box:
    return spaces.Box(low=0, high=PAD, shape=(space.max_length,), dtype=np.int32)


# Shared memory: one row of ``max_length + 1`` int32 per env, the text's length first.
@create_shared_memory.register(TextSpace)
def _create_text_shared_memory(
    space: TextSpace, n: int = 1, ctx: ModuleType = mp
) -> SynchronizedArray:
    return ctx.Array(np.dtype(np.int32).char, n * (space.max_length + 1))


@write_to_shared_memory.register(TextSpace)
def _write_text_to_shared_memory(
    space: TextSpace, index: int, values: str, shared_memory: SynchronizedArray
) -> None:
    codes = code_points(space, values)
    rows = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)
    start = index * (space.max_length + 1)
    rows[start] = len(codes)
    rows[start + 1 : start + 1 + len(codes)] = codes


class SharedTexts(Sequence[str]):
    """The texts of a batch, read from shared memory when indexed.

    ``AsyncVectorEnv`` reads its shared memory once and expects views that follow every
    later write, as numpy arrays over the buffer do; this is such a view for texts. A deep
    copy (what ``AsyncVectorEnv`` returns by default, ``copy=True``) is a plain tuple.
    """

    def __init__(self, rows: np.ndarray, n: int, max_length: int) -> None:
        self._rows, self._n, self._size = rows, n, max_length + 1

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(self._n)))
        if not -self._n <= index < self._n:
            raise IndexError(f"text {index} of a batch of {self._n}")
        start = (index % self._n) * self._size
        return from_code_points(self._rows[start + 1 : start + 1 + int(self._rows[start])])

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # a live view, like the arrays beside it

    def __repr__(self) -> str:
        return f"SharedTexts({tuple(self)!r})"


@read_from_shared_memory.register(TextSpace)
def _read_text_from_shared_memory(
    space: TextSpace, shared_memory: SynchronizedArray, n: int = 1
) -> SharedTexts:
    return SharedTexts(np.frombuffer(shared_memory.get_obj(), dtype=np.int32), n, space.max_length)
