"""Hugging Face hub datasets by id, or from a local mirror laid out as the hub.

Every hub read goes through `read()`: one `datasets.load_dataset` call whose path is the hub id, or
`MIRROR/<org>/<name>` when a mirror is given (the same call, the same configs, splits and data files),
so what runs offline against a mirror is what runs against the hub. Without a mirror, `datasets` itself
decides between the network and its cache (`HF_DATASETS_OFFLINE`, `HF_HUB_OFFLINE`, `HF_DATASETS_CACHE`).
Failures become a `DataError` that names the dataset and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .schema import DataError

PARQUET_EXPORT = "refs/convert/parquet"  # the hub's parquet conversion of a loading-script dataset


@dataclass(frozen=True)
class HubRead:
    """How the paper reads one hub dataset: config, splits, and (for loading-script datasets) the files
    of the parquet export."""

    id: str
    splits: tuple[str, ...] = ("train",)
    config: str | None = None
    data_files: dict[str, list[str]] = field(default_factory=dict)  # split -> file patterns
    revision: str | None = None
    streaming: bool = False

    def describe(self) -> str:
        where = f"{self.id}@{self.revision}" if self.revision else self.id
        files = f" (files {', '.join(self.roots())}/)" if self.data_files else ""
        return f"{where} {'+'.join(self.splits)}{files}"

    def roots(self) -> list[str]:
        """The top folders the data files lie in."""
        pats = [p for ps in self.data_files.values() for p in ([ps] if isinstance(ps, str) else ps)]
        return sorted({p.split("/")[0] for p in pats})

    def download_hint(self, mirror: str | Path) -> str:
        """The command that fills MIRROR/<id> with what this read needs."""
        extra = f" --revision {self.revision}" if self.revision else ""
        if self.data_files:
            extra += "".join(f" --include '{r}/*'" for r in self.roots())
        cmd = f"hf download {self.id} --repo-type dataset{extra} --local-dir {Path(mirror) / self.id}"
        # a streamed corpus (FineWeb: terabytes) needs only as many of its data files as the count reads
        return cmd + (" --include README.md --include '<a few data files>'" if self.streaming else "")


def mirror_dir(hid: str, mirror: str | Path) -> Path:
    return Path(mirror) / hid


def read(spec: HubRead, split: str, *, mirror: str | Path | None = None, alternative: str = ""):
    """One split of a hub dataset (an IterableDataset when `spec.streaming`), from the hub or the mirror.
    `alternative`: a sentence appended to errors, naming another source the user may pass instead."""
    import datasets

    path = spec.id
    if mirror is not None:
        path = str(mirror_dir(spec.id, mirror))
        if not Path(path).is_dir():
            raise DataError(missing_from_mirror(spec, mirror, alternative))
    kw = {"split": split, "streaming": spec.streaming}
    if spec.data_files:
        kw["data_files"] = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in spec.data_files.items()}
    if spec.revision and mirror is None:  # a mirror holds that revision's files as they are
        kw["revision"] = spec.revision
    try:
        return datasets.load_dataset(path, spec.config, **kw)
    except Exception as err:  # noqa: BLE001 - every failure is reported with the dataset's name and the fix
        raise explain(spec, err, mirror, alternative) from None


def rows(spec: HubRead, split: str, *, mirror=None, alternative: str = "") -> Iterator[dict]:
    """The rows of one split; errors raised while streaming are explained like those of `read`."""
    return iterate(read(spec, split, mirror=mirror, alternative=alternative), spec, mirror=mirror,
                   alternative=alternative)


def iterate(ds, spec: HubRead, *, mirror=None, alternative: str = "") -> Iterator[dict]:
    """Rows of a dataset `read` returned (a new pass from the start each call)."""
    it = iter(ds)
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001
            raise explain(spec, err, mirror, alternative) from None
        yield row


def missing_from_mirror(spec: HubRead, mirror, alternative: str = "") -> str:
    return (f"{spec.id}: not in the hub mirror {mirror} (no directory {mirror_dir(spec.id, mirror)}). "
            f"Put the dataset's files there as on the hub, e.g. `{spec.download_hint(mirror)}`, or drop "
            f"--hub-mirror to read it from the hub. {alternative}").strip()


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_gated(err: BaseException) -> bool:
    """The hub refused a gated dataset (no token, or terms not accepted)."""
    from huggingface_hub.errors import GatedRepoError

    return any(isinstance(e, GatedRepoError) or "gated" in str(e).lower() for e in _chain(err))


def explain(spec: HubRead, err: BaseException, mirror=None, alternative: str = "") -> DataError:
    """A DataError naming the dataset, what went wrong and the fix."""
    hid = spec.id
    if isinstance(err, DataError):
        return err
    if is_gated(err):
        return DataError(
            f"{hid} is a gated dataset and the hub refused access ({err}). Accept its terms at "
            f"https://huggingface.co/datasets/{hid} while logged in, create a read token at "
            "https://huggingface.co/settings/tokens and set HF_TOKEN=<token> (or run `hf auth login`), then "
            f"rerun. {alternative}".strip())
    where = f"the mirror copy {mirror_dir(hid, mirror)}" if mirror is not None else "the hub"
    if mirror is None and any(isinstance(e, ConnectionError) or type(e).__name__ in ("OfflineModeIsEnabled",
                                                                                      "ConnectError", "ConnectTimeout")
                              for e in _chain(err)):
        return DataError(
            f"{hid}: cannot reach the Hugging Face hub and the dataset is not in the datasets cache ({err}). Go "
            f"online (unset HF_DATASETS_OFFLINE / HF_HUB_OFFLINE), or pass --hub-mirror DIR with the dataset's "
            f"files under DIR/{hid}/ ({spec.download_hint('DIR')}). {alternative}".strip())
    return DataError(f"{hid}: reading {spec.describe()} from {where} failed: {type(err).__name__}: {err}. "
                     f"{alternative}".strip())
