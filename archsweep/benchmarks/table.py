"""One query interface over every benchmark table, with the budget accounting NAS papers report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from archsweep.errors import NotInTableError, UnknownNameError
from archsweep.spaces import Cell, SearchSpace


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"


# Looking at these results costs a training run; test accuracy is only read for reporting, as papers do.
CHARGED_SPLITS = (Split.TRAIN, Split.VAL)


@dataclass
class Budget:
    """What a search has spent: one query per distinct (cell, dataset, epochs) training result revealed.

    Repeating a query reveals nothing new and is free; reading the test split is free (reported, never
    searched on). `seconds` sums the table's training time of each charged query where it has one;
    `queries_without_time` counts those where it has none.
    """

    queries: int = 0
    seconds: float = 0.0
    queries_without_time: int = 0
    test_lookups: int = 0
    _charged: set = field(default_factory=set, repr=False)

    def charge(self, key: tuple, seconds: float | None) -> None:
        if key in self._charged:
            return
        self._charged.add(key)
        self.queries += 1
        if seconds is None or np.isnan(seconds):
            self.queries_without_time += 1
        else:
            self.seconds += float(seconds)

    def reset(self) -> None:
        self.queries, self.seconds, self.queries_without_time, self.test_lookups = 0, 0.0, 0, 0
        self._charged.clear()


@dataclass
class TableBenchmark:
    """A benchmark table: `accuracy[(dataset, split, epochs)][i]` in percent (NaN where unmeasured) and
    `train_seconds[(dataset, epochs)][i]` for entry i, whose key is `keys[i]`.

    `key_of(cell)` maps a cell to its key (raising for an invalid cell); entries are found by key.
    """

    name: str
    label: str  # says what the numbers are, for every table, plot and log line that shows them
    space: SearchSpace
    datasets: tuple[str, ...]
    epochs: tuple[int, ...]
    default_epochs: int
    keys: Sequence[str]
    key_of: Callable[[Cell], str]
    accuracy: dict[tuple[str, str, int], np.ndarray]
    train_seconds: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    cell_of: Callable[[int], Cell] | None = None
    budget: Budget = field(default_factory=Budget)
    unavailable: dict[str, str] = field(default_factory=dict)  # split -> why this table lacks it

    def __post_init__(self):
        self._index = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return f"<benchmark {self.name}: {self.label}>"

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s.value for s in Split if any(k[1] == s for k in self.accuracy))

    def index_of(self, cell: Cell) -> int:
        """The table entry of a valid cell; NotInTableError when the table lacks it."""
        key = self.key_of(cell)
        try:
            return self._index[key]
        except KeyError:
            raise NotInTableError(
                f"cell {key} is valid in {self.space.name} but has no entry in {self.label} "
                f"({len(self)} entries)") from None

    def __contains__(self, cell: Cell) -> bool:
        return self.key_of(cell) in self._index

    def find(self, cell: Cell) -> int | None:
        """The table entry of a cell; None when the cell is invalid or the table lacks it."""
        if not self.space.is_valid(cell):
            return None
        return self._index.get(self.key_of(cell))

    def entry(self, key: str) -> int:
        return self._index[key]

    def cell(self, index: int) -> Cell:
        if self.cell_of is None:
            raise NotImplementedError(f"{self.name} does not store cells")
        return self.cell_of(index)

    def _column(self, dataset: str | None, split: str, epochs: int | None) -> tuple[str, str, int]:
        dataset = self.datasets[0] if dataset is None else dataset
        if dataset not in self.datasets:
            raise UnknownNameError(f"dataset of {self.name}", dataset, self.datasets)
        if split not in self.splits:
            raise UnknownNameError(f"split of {self.label}", split, self.splits, hint=self.unavailable.get(split))
        epochs = self.default_epochs if epochs is None else int(epochs)
        if epochs not in self.epochs:
            raise UnknownNameError(f"epoch budget of {self.name}", epochs, self.epochs)
        return dataset, Split(split).value, epochs

    def lookup(self, index: int, dataset: str | None = None, split: str = "val", epochs: int | None = None) -> float:
        """Accuracy (percent) of entry `index`, without touching the budget."""
        return float(self.accuracy[self._column(dataset, split, epochs)][index])

    def query(self, cell: Cell, dataset: str | None = None, split: str = "val", epochs: int | None = None) -> float:
        """Accuracy (percent) of `cell`, charged to `budget` as a NAS search would be."""
        column = self._column(dataset, split, epochs)
        index = self.index_of(cell)
        if column[1] == Split.TEST:
            self.budget.test_lookups += 1
        else:
            seconds = self.train_seconds.get((column[0], column[2]))
            self.budget.charge((index, column[0], column[2]), None if seconds is None else seconds[index])
        return float(self.accuracy[column][index])

    def best(self, dataset: str | None = None, split: str = "val", epochs: int | None = None) -> tuple[int, float]:
        """(index, accuracy) of the table's best entry on that column, ignoring unmeasured entries."""
        column = self.accuracy[self._column(dataset, split, epochs)]
        i = int(np.nanargmax(column))
        return i, float(column[i])
