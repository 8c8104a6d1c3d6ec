"""Where a training's curves go besides ``history.csv``: TensorBoard event files in its output
folder, on by default (``train.tensorboard``).

One small interface, :class:`Tracker`: ``epochs(rows, config)`` is given the whole history
each time a training writes its checkpoint and logs the rows it has not logged yet;
``result(hparams, metrics)`` records a finished training's settings and test metrics (what
TensorBoard's HParams view lists); ``close()``. :class:`TensorBoardTracker` writes them with
``torch.utils.tensorboard``. The tags are the history's columns (:func:`scalar_tag`), so the
board is ``history.csv`` drawn: ``train/loss``, ``train/lr``, ``val/logloss``,
``val/accuracy``..., ``time/epoch_seconds``, one step per epoch.

A resumed training relogs its whole history (from its ``last.pt``) behind a purge marker at
step 1 (``SummaryWriter(purge_step=1)``): TensorBoard's readers drop what an earlier,
interrupted process wrote, so the board shows each epoch once, as ``history.csv`` does, even
where the earlier process died between its checkpoint and its event. A finished training's
result is written at the step after its last epoch, behind its own purge marker, so
reloading it replaces the result instead of adding a second one.

``AVSC_HPARAMS`` (comma-separated config keys, set by ``avsc sweep``) names the keys every
training lists in the HParams view even at their default values."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

#: config keys (comma-separated) the HParams view lists for every training, set by a sweep
HPARAMS_ENV = "AVSC_HPARAMS"
#: the event files' names (TensorBoard's): ``events.out.tfevents.<time>.<host>...``
EVENTS_GLOB = "events.out.tfevents.*"

_TAGS = {
    "train_loss": "train/loss",
    "lr": "train/lr",
    "seconds": "time/epoch_seconds",
    "peak_gpu_mb": "time/peak_gpu_mb",
}
_NOT_CURVES = frozenset({"epoch", "best"})


def scalar_tag(column: str) -> str | None:
    """The TensorBoard tag of a history column: ``val_X`` -> ``val/X``, ``train_loss`` ->
    ``train/loss``, ``lr`` -> ``train/lr``, ``seconds`` -> ``time/epoch_seconds``, any other
    -> ``train/<column>``; None for ``epoch`` (the step) and ``best`` (a flag)."""
    if column in _NOT_CURVES:
        return None
    if column in _TAGS:
        return _TAGS[column]
    if column.startswith("val_"):
        return f"val/{column[4:]}"
    return f"train/{column}"


class Tracker(Protocol):
    """What a training reports as it runs."""

    def epochs(self, rows: list[dict[str, Any]], config: Mapping[str, Any] | None) -> None:
        """``rows``: the whole history so far (one dict per epoch, with ``epoch``)."""

    def result(
        self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        """A finished training's settings and final metrics, at ``step`` (by default the one
        after the last epoch logged)."""

    def close(self) -> None: ...


class NoTracker:
    """``train.tensorboard: false``: nothing written."""

    def epochs(self, rows, config) -> None:
        pass

    def result(self, hparams, metrics, step=None) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """TensorBoard event files in ``folder`` (the training's output folder)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._writer = None
        self._logged = 0  # history rows written by this process
        self._link: str | None = None  # see _writable
        self._link_dir: tempfile.TemporaryDirectory | None = None

    def _open(self, purge_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.folder.mkdir(parents=True, exist_ok=True)
        return SummaryWriter(self._writable(), purge_step=purge_step, flush_secs=30)

    def _writable(self) -> str:
        """The folder as a path TensorBoard can open: TensorBoard encodes paths as UTF-8, so a
        folder whose name the system gave in another encoding (a non-ASCII name under an
        ASCII locale: surrogate escapes) is reached through a link with an ASCII name in a
        temporary folder of this tracker's own."""
        folder = str(self.folder.resolve())
        try:
            folder.encode("utf-8")
            return folder
        except UnicodeEncodeError:
            pass
        if self._link is None:
            self._link_dir = tempfile.TemporaryDirectory(prefix="avsc-tensorboard-")
            self._link = os.path.join(self._link_dir.name, "run")
            os.symlink(folder, self._link)
        return self._link

    def epochs(self, rows: list[dict[str, Any]], config: Mapping[str, Any] | None) -> None:
        if self._writer is None:
            # this process's first write: all of the history, replacing any earlier events
            # (TensorBoard purges scalars, not text: the config is written once per folder)
            first = not any(self.folder.glob(EVENTS_GLOB))
            self._writer = self._open(purge_step=1)
            if config and first:
                text = yaml.safe_dump(_plain(config), sort_keys=True)
                self._writer.add_text("config", f"```yaml\n{text}```", global_step=1)
        for row in rows[self._logged :]:
            step = int(row["epoch"])
            for column, value in row.items():
                tag = scalar_tag(column)
                if tag is not None and _is_number(value):
                    self._writer.add_scalar(tag, float(value), step)
        self._logged = len(rows)
        self._writer.flush()

    def result(
        self, hparams: Mapping[str, Any], metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        self.close()
        step = self._logged + 1 if step is None else step  # after the last epoch: its purge
        # leaves the curves alone
        writer = self._open(purge_step=step)
        try:
            metrics = {k: float(v) for k, v in metrics.items() if _is_number(v)}
            hp = {_text(str(k)): _hparam_value(v) for k, v in hparams.items()}
            exp, ssi, sei = hparams_summary(hp, metrics)
            for summary in (exp, ssi, sei):
                writer.file_writer.add_summary(summary, step)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, step)
        finally:
            writer.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._link_dir is not None:
            self._link_dir.cleanup()
            self._link = self._link_dir = None


def tracker(folder: str | os.PathLike, enabled: bool = True) -> Tracker:
    """The tracker of a training writing into ``folder``."""
    return TensorBoardTracker(folder) if enabled else NoTracker()


def hparams_of(
    config: Mapping[str, Any], defaults: Mapping[str, Any], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """A training's entries in the HParams view: ``extra`` (system, feature, backbone), then
    the config keys named in ``$AVSC_HPARAMS`` (a sweep's: the keys its points differ in,
    whatever their value), or else every flattened config key whose value differs from
    ``defaults``. Values TensorBoard cannot hold (lists, None) become text."""
    flat, base = flatten(config), flatten(defaults)
    named = [k.strip() for k in os.environ.get(HPARAMS_ENV, "").split(",") if k.strip()]
    if named:
        keys = [k for k in named if k in flat]
    else:
        keys = [k for k in flat if flat[k] != base.get(k, object())]
    out: dict[str, Any] = {k: _hparam_value(v) for k, v in extra.items() if v is not None}
    for key in keys:
        if key in RUN_PLACES:
            continue
        out[key] = _hparam_value(flat[key])
    return out


#: config keys that say where a run reads and writes, not what it is
RUN_PLACES = frozenset({"train.device", "train.num_workers", "train.cpu_threads"})


def _hparam_value(value: Any) -> Any:
    if isinstance(value, bool) or _is_number(value):
        return value
    return _text(str(value))


def _text(s: str) -> str:
    """``s`` as text TensorBoard can store (UTF-8): a file name's surrogate escapes (bytes
    the locale could not decode) become U+FFFD."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; tuples as lists (as they come
    back from YAML and checkpoints)."""
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(d, (list, tuple)):
        return {prefix[:-1]: [flatten(v)[""] for v in d]}
    return {prefix[:-1]: d}


def _plain(d: Any) -> Any:
    """``d`` with tuples as lists and anything else YAML cannot dump safely as text."""
    if isinstance(d, Mapping):
        return {str(k): _plain(v) for k, v in d.items()}
    if isinstance(d, Iterable) and not isinstance(d, str | bytes):
        return [_plain(v) for v in d]
    if isinstance(d, str):
        return _text(d)
    if d is None or isinstance(d, bool | int | float):
        return d
    return _text(str(d))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
