"""Worker processes' records files: naming, merging only finished ones, and the merge command."""

from __future__ import annotations

from pathlib import Path

from bench.store.load_stats import LoadStats, read_load_stats, write_load_stats
from bench.store.record_parts import main, merge_parts, part_files, records_path_for
from bench.store.records import RecordWriter, RequestRecord, read_records


def _write_part(path: Path, rows: int, finished: bool, cell: str) -> None:
    with RecordWriter(path) as writer:
        writer.write_many(
            RequestRecord(1000.0 + i, 5.0, 200, 1, "row-orjson", 10, 1.0, 5, "", cell) for i in range(rows)
        )
    write_load_stats(path, LoadStats(warmup_by_cell={cell: 1}, finished=finished))


def test_worker_files_merge_only_when_finished(tmp_path: Path) -> None:
    target = tmp_path / "requests.csv"
    assert records_path_for(target, distributed=False) == target
    first, second = records_path_for(target, True, pid=11), records_path_for(target, True, pid=12)
    assert first.name == "requests.11.csv"
    _write_part(first, 30, finished=True, cell="a")
    _write_part(second, 20, finished=False, cell="a")
    (tmp_path / "requests.summary.csv").write_text("not a part")
    assert part_files(target) == [first, second]

    assert merge_parts(target) == 30  # the unfinished file is left alone
    assert second.exists()
    assert not first.exists()
    assert len(read_records(target)) == 30

    assert main(["merge", str(target), "--force"]) == 0  # e.g. a worker that was killed
    assert not second.exists()
    assert len(read_records(target)) == 50
    load = read_load_stats(target)
    assert load is not None
    assert load.warmup_by_cell == {"a": 2}
    assert load.processes == 2
