"""The corpus on disk, written and read in one place: ``OUT/corpus/{split}.parquet`` (kept rows, without
the pipeline's bookkeeping columns) and ``OUT/rejected/{split}.parquet`` (rejected rows, with the stage
and reason). Media paths in the rows are relative to ``OUT``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from corpus.schema import INTERNAL_COLUMNS, Row
from media.files import atomic_write_bytes

if TYPE_CHECKING:  # pandas is imported where frames are made: finding the files needs none of it
    import pandas as pd

FOLDERS = {"kept": "corpus", "rejected": "rejected"}


def assemble(outdir: Path, rows: Iterable[Row]) -> list[Row]:
    """Write decided rows (one per sample id, the last wins) into ``corpus/`` and ``rejected/``, one
    parquet per split, each atomically; split files no row belongs to any more are removed."""
    import pandas as pd

    rows = list({row["id"]: row for row in rows}.values())
    for status, name in FOLDERS.items():
        folder = Path(outdir) / name
        folder.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame([r for r in rows if r["status"] == status])
        splits = sorted(frame["split"].unique()) if len(frame) else []
        for stale in folder.glob("*.parquet"):
            if stale.stem not in splits:
                stale.unlink(missing_ok=True)
        for split in splits:
            part = frame[frame["split"] == split]
            if status == "kept":
                part = part.drop(columns=[c for c in INTERNAL_COLUMNS if c in part.columns])
            part = part.dropna(axis=1, how="all").reset_index(drop=True)
            buffer = io.BytesIO()
            part.to_parquet(buffer, index=False)
            atomic_write_bytes(folder / f"{split}.parquet", buffer.getvalue())
    return rows


def parquet_files(outdir: Path, statuses: Iterable[str] = ("kept", "rejected")) -> list[Path]:
    """The split files of the given statuses, kept first."""
    return [p for status in statuses for p in sorted((Path(outdir) / FOLDERS[status]).glob("*.parquet"))]


def read_frame(outdir: Path, statuses: Iterable[str] = ("kept",)) -> "pd.DataFrame":
    """The rows of the given statuses as one frame (empty when there are none)."""
    files = parquet_files(outdir, statuses)
    import pandas as pd

    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def read_rows(outdir: Path, statuses: Iterable[str] = ("kept", "rejected")) -> list[Row]:
    """The rows as dicts, each with its ``status`` (kept rows do not store it)."""
    rows: list[Row] = []
    for status in statuses:
        for row in read_frame(outdir, (status,)).to_dict(orient="records"):
            row.setdefault("status", status)
            row.setdefault("stage", "kept" if status == "kept" else "unknown")
            rows.append(row)
    return rows


def kept_ids(outdir: Path) -> set[str]:
    """Ids of the kept rows (reads only the id column; empty when there is no corpus)."""
    import pyarrow.parquet as pq

    return {str(i) for path in parquet_files(outdir, ("kept",))
            for i in pq.read_table(path, columns=["id"]).column("id").to_pylist()}
