"""The running service with real watchdog on tmp folders: arrivals, intake rules, back-pressure.

Files are written the way scanners and shares write them: slowly in chunks, or to a temporary
name then renamed, or moved in from elsewhere. Every report is validated against the schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from daemon_support import (
    claim_root,
    image_bytes,
    make_config,
    reports,
    run_once,
    running,
    wait_for,
    write_slowly,
)

from daemon.commands import status as status_command
from daemon.config import WatchConfig
from daemon.intake import watcher as watch
from daemon.intake.rules import IntakeRules, Offer
from daemon.intake.watcher import Watcher
from daemon.shared.bundle import DEFAULT_BUNDLE, load_bundle

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SCAN = image_bytes("PNG", seed=1)
QUIET = {"poll_interval_s": 3600.0, "reconcile_interval_s": 3600.0}
"""No periodic scan or retry within a test: only events and `Watcher.room` move files."""


def _report_count(folder: Path) -> int:
    return len(list(folder.glob("*.json"))) if folder.exists() else 0


class TestInotify:
    def test_a_slow_chunked_write_is_taken_only_once_closed(self, tmp_path) -> None:
        """A scanner writing in chunks over a second gets one report of the whole file."""
        data = image_bytes("PNG", size=512, seed=2)
        config = make_config(tmp_path)
        with running(config):
            write_slowly(config.incoming / "slow.png", data, chunks=8, pause=0.15)
            wait_for(lambda: _report_count(config.reports) == 1, what="the report")
        (report,) = reports(config.reports).values()
        assert report["status"] == "ok"
        assert report["source"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert report["source"]["bytes"] == len(data)

    def test_temporary_name_then_rename_is_taken_under_the_final_name(self, tmp_path) -> None:
        """.part files are ignored while written; the rename makes the scan appear."""
        config = make_config(tmp_path)
        with running(config):
            part = config.incoming / "study.png.part"
            write_slowly(part, SCAN, chunks=3, pause=0.05)
            part.rename(config.incoming / "study.png")
            wait_for(lambda: _report_count(config.reports) == 1, what="the report")
        assert list(reports(config.reports)) == ["study.png"]

    def test_a_file_moved_in_from_another_folder_is_taken(self, tmp_path) -> None:
        """A file moved into the folder (no close event inside it) is taken on the move."""
        config = make_config(tmp_path)
        outside = tmp_path / "elsewhere.png"
        outside.write_bytes(SCAN)
        with running(config):
            outside.rename(config.incoming / "moved.png")
            wait_for(lambda: _report_count(config.reports) == 1, what="the report")
        assert list(reports(config.reports)) == ["moved.png"]

    def test_dotfiles_and_temporary_suffixes_are_left_alone(self, tmp_path) -> None:
        """Hidden files and names with ignored suffixes are never claimed, in any case."""
        config = make_config(tmp_path)
        ignored = [".hidden.png", "scan.PART", "x.tmp", "y.crdownload", "z.swp"]
        with running(config):
            for name in ignored:
                (config.incoming / name).write_bytes(SCAN)
            (config.incoming / "real.png").write_bytes(SCAN)
            wait_for(lambda: _report_count(config.reports) == 1, what="the report")
        assert list(reports(config.reports)) == ["real.png"]
        assert sorted(p.name for p in config.incoming.iterdir() if p.is_file()) == sorted(ignored)

    def test_files_present_at_start_are_taken(self, tmp_path) -> None:
        """What arrived while the service was down is found by the start-up scan."""
        config = make_config(tmp_path)
        config.incoming.mkdir(parents=True)
        for i in range(3):
            (config.incoming / f"waiting{i}.png").write_bytes(image_bytes("PNG", seed=10 + i))
        with running(config):
            wait_for(lambda: _report_count(config.reports) == 3, what="three reports")

    def test_the_reconcile_scan_catches_what_inotify_did_not_report(self, tmp_path) -> None:
        """A hard link gives inotify no close or move event; the periodic scan still takes it."""
        config = make_config(tmp_path, watch={"reconcile_interval_s": 0.5})
        source = tmp_path / "outside.png"
        source.write_bytes(SCAN)
        with running(config):
            os.link(source, config.incoming / "linked.png")
            wait_for(lambda: _report_count(config.reports) == 1, what="the reconcile scan")
        assert list(reports(config.reports)) == ["linked.png"]

    # watchdog 7.1 may add the watch of a folder created with its parent twice (once from the
    # parent's scan, once from its own IN_CREATE) and warns that it overwrote the identical
    # callback; the pytest-wide "error" filter would turn that warning into an exception that
    # kills watchdog's reader thread. In production it is one library_warning log line.
    @pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
    def test_sub_folders_are_watched_when_recursive(self, tmp_path) -> None:
        """With watch.recursive, scans in new sub-folders are taken and named by their path."""
        config = make_config(tmp_path, watch={"recursive": True})
        with running(config):
            study = config.incoming / "study1" / "series2"
            study.mkdir(parents=True)
            (study / "slice.png").write_bytes(SCAN)
            wait_for(lambda: _report_count(config.reports) == 1, what="the report")
        assert list(reports(config.reports)) == ["study1/series2/slice.png"]
        assert (config.work / "done" / "study1" / "series2" / "slice.png").exists()


class TestPolling:
    def test_a_network_share_style_slow_writer_is_taken_once_stable(self, tmp_path) -> None:
        """Polling: a file growing in bursts is taken only after stable_s without change."""
        data = image_bytes("PNG", size=512, seed=3)
        config = make_config(tmp_path, watch={"mode": "polling", "stable_s": 0.6})
        with running(config):
            write_slowly(config.incoming / "share.png", data, chunks=6, pause=0.25)
            wait_for(lambda: _report_count(config.reports) == 1, what="the report")
        (report,) = reports(config.reports).values()
        assert report["source"]["sha256"] == hashlib.sha256(data).hexdigest()

    def test_polling_watcher_does_not_offer_a_growing_file(self, tmp_path) -> None:
        """The watcher offers nothing while size or mtime keep changing, then offers it once."""
        folder = tmp_path / "in"
        folder.mkdir()
        offered: list[Path] = []
        rules = IntakeRules(folder, recursive=False, ignore_suffixes=())
        config = WatchConfig(mode="polling", poll_interval_s=0.05, stable_s=0.5)

        def offer(path: Path) -> Offer:
            offered.append(path)
            path.unlink()
            return Offer.CLAIMED

        with Watcher(config, rules, offer):
            with (folder / "growing.png").open("wb") as fh:
                for _ in range(8):
                    fh.write(b"x" * 1000)
                    fh.flush()
                    threading.Event().wait(0.15)
                    assert offered == []
            wait_for(lambda: offered == [folder / "growing.png"], what="the offer")


class TestBackPressureAndRecovery:
    def test_a_burst_larger_than_the_queue_is_all_processed_once(self, tmp_path) -> None:
        """With one pending slot, a burst of 25 waits in incoming and every file gets one report."""
        config = make_config(tmp_path, pipeline={"max_pending": 1, "decode_workers": 1})
        with running(config) as service:
            for i in range(25):
                (config.incoming / f"b{i:02d}.png").write_bytes(image_bytes("PNG", size=96, seed=i))
            counters = service.service.counters
            wait_for(lambda: counters.snapshot().processed == 25, what="25 scans")
        assert len(reports(config.reports)) == 25
        assert len(list((config.work / "done").iterdir())) == 25

    def test_leftovers_in_processing_are_taken_up_at_start(self, tmp_path) -> None:
        """Files a crash left in processing/ are reported once the service starts again."""
        config = make_config(tmp_path)
        claim_folder = claim_root(config) / "processing" / "0000000000000001-abcdef"
        claim_folder.mkdir(parents=True)
        (claim_folder / "left.png").write_bytes(SCAN)
        (claim_root(config) / "processing" / "0000000000000002-abcdef").mkdir()
        assert run_once(config) == 0
        assert list(reports(config.reports)) == ["left.png"]
        assert list((claim_root(config) / "processing").iterdir()) == []

    def test_the_same_scan_twice_gives_one_report_and_one_archived_copy(self, tmp_path) -> None:
        """A resend (same name, same bytes) rewrites the same report; done/ keeps one copy."""
        config = make_config(tmp_path)
        with running(config) as service:
            for _ in range(2):
                (config.incoming / "again.png").write_bytes(SCAN)
                wait_for(lambda: not (config.incoming / "again.png").exists(), what="the claim")
                wait_for(lambda: service.service.counters.snapshot().processed >= 1)
            wait_for(lambda: service.service.counters.snapshot().processed == 2)
        assert list(reports(config.reports)) == ["again.png"]
        assert [p.name for p in (config.work / "done").iterdir()] == ["again.png"]

    def test_a_different_file_of_the_same_name_is_kept_beside(self, tmp_path) -> None:
        """A new scan named like an archived one never replaces it: done/ gets name~1."""
        config = make_config(tmp_path)
        with running(config) as service:
            for seed in (20, 21):
                (config.incoming / "same-name.png").write_bytes(image_bytes("PNG", seed=seed))
                wait_for(lambda: not (config.incoming / "same-name.png").exists(), what="claim")
            wait_for(lambda: service.service.counters.snapshot().processed == 2)
        assert sorted(p.name for p in (config.work / "done").iterdir()) == [
            "same-name.png",
            "same-name~1.png",
        ]
        assert _report_count(config.reports) == 2

    def test_keep_leaves_the_file_on_the_incoming_file_system_and_out_of_intake(
        self, tmp_path
    ) -> None:
        """outcome keep: the input goes to incoming/.infarctwatch/done and is never re-ingested."""
        config = make_config(
            tmp_path, outcome={"success": "keep"}, watch={"reconcile_interval_s": 0.3}
        )
        with running(config) as service:
            (config.incoming / "kept.png").write_bytes(SCAN)
            wait_for(lambda: _report_count(config.reports) == 1, what="the report")
            threading.Event().wait(1.0)  # several reconcile scans
            assert service.service.counters.snapshot().processed == 1
        assert (claim_root(config) / "done" / "kept.png").read_bytes() == SCAN
        assert not (config.work / "done").exists()


def test_status_file_and_status_command_while_running(tmp_path, capsys) -> None:
    """The status file shows counters and model; `infarctwatch status` says running, exit 0."""
    config = make_config(tmp_path)
    config_file = tmp_path / "daemon.yaml"
    with running(config):
        (config.incoming / "one.png").write_bytes(SCAN)
        wait_for(lambda: _report_count(config.reports) == 1, what="the report")
        wait_for(
            lambda: json.loads(config.status_path.read_text())["processed"] == 1,
            timeout=15,
            what="the status file to count the scan",
        )
        assert status_command.main(["--config", str(config_file)]) == 0
        out = capsys.readouterr().out
        assert "running" in out and "processed    1" in out
        assert load_bundle(DEFAULT_BUNDLE).name in out
    assert status_command.main(["--config", str(config_file)]) == 3
    assert "not running" in capsys.readouterr().out
    status = json.loads(config.status_path.read_text())
    assert status["state"] == "stopped" and status["processed"] == 1


def test_once_takes_everything_beyond_the_watchers_memory_bound(tmp_path, monkeypatch) -> None:
    """--once over more files than the watcher tracks at a time still takes every one."""
    monkeypatch.setattr(watch, "MAX_TRACKED", 3)
    config = make_config(tmp_path, pipeline={"max_pending": 2})
    config.incoming.mkdir(parents=True)
    for i in range(8):
        (config.incoming / f"many{i}.png").write_bytes(image_bytes("PNG", size=64, seed=i))
    assert run_once(config) == 0
    assert len(reports(config.reports)) == 8


class Slots:
    """A pacing fake of the pipeline: at most ``size`` claims at a time, each freed by `release`.

    A claim renames the file out of the watched folder, as the real one does; every offer is
    recorded with the file's size at that moment.
    """

    def __init__(self, tmp_path: Path, size: int) -> None:
        self.claimed_dir = tmp_path / "claimed"
        self.claimed_dir.mkdir()
        self.watcher: Watcher | None = None
        self.claimed: list[str] = []
        self.offers: list[tuple[str, int]] = []
        self._free = size
        self._lock = threading.Lock()

    def offer(self, path: Path) -> Offer:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = -1
        with self._lock:
            self.offers.append((path.name, size))
            if self._free == 0:
                return Offer.BUSY
            self._free -= 1
        try:
            path.rename(self.claimed_dir / path.name)
        except FileNotFoundError:
            self.release()
            return Offer.GONE
        with self._lock:
            self.claimed.append(path.name)
        return Offer.CLAIMED

    def release(self, count: int = 1) -> None:
        """Free ``count`` slots, calling `Watcher.room` once per slot (as the report writer)."""
        assert self.watcher is not None
        for _ in range(count):
            with self._lock:
                self._free += 1
            self.watcher.room()


def _watcher(tmp_path: Path, slots: Slots, **config: Any) -> Watcher:
    folder = tmp_path / "in"
    folder.mkdir()
    rules = IntakeRules(folder, recursive=False, ignore_suffixes=(".part",))
    watcher = Watcher(WatchConfig(**config), rules, slots.offer)
    slots.watcher = watcher
    return watcher


@contextmanager
def _started(watcher: Watcher) -> Iterator[Watcher]:
    """The watcher running, once its start-up scan is over (so that it sees only events)."""
    with structlog.testing.capture_logs() as logs, watcher:
        wait_for(lambda: any(e["event"] == "startup_scan" for e in logs), what="start-up scan")
        yield watcher


def _move_in(tmp_path: Path, names: list[str]) -> None:
    """Write each file outside the folder, then rename them in one after the other."""
    staging = tmp_path / "staging"
    staging.mkdir(exist_ok=True)
    for name in names:
        (staging / name).write_bytes(name.encode())
    for name in names:
        (staging / name).rename(tmp_path / "in" / name)


class _Counting:
    """Counts every entry the mapping's iterations hand out (mixed into dict and OrderedDict)."""

    def __init__(self, counter: list[int]) -> None:
        super().__init__()
        self.counter = counter

    def __iter__(self) -> Iterator[Any]:
        for key in super().__iter__():  # type: ignore[misc]
            self.counter[0] += 1
            yield key

    def items(self) -> Iterator[tuple[Any, Any]]:
        for item in super().items():  # type: ignore[misc]
            self.counter[0] += 1
            yield item


class _CountingDict(_Counting, dict[Any, Any]):  # type: ignore[misc]
    """The settling set, counted."""


class _CountingOrderedDict(_Counting, OrderedDict[Any, Any]):  # type: ignore[misc]
    """The queue, counted."""


class TestWatcherUnderBackPressure:
    def test_a_burst_far_larger_than_the_room_is_taken_whole_in_arrival_order(
        self, tmp_path
    ) -> None:
        """500 files into 3 slots freed by another thread: every file taken once, in order."""
        slots = Slots(tmp_path, size=3)
        names = [f"burst{i:04d}.png" for i in range(500)]
        stop = threading.Event()

        def finish() -> None:  # the pipeline's report writer: ends claims, freeing their slots
            finished = 0
            while not stop.is_set():
                if len(slots.claimed) > finished:
                    finished += 1
                    slots.release()
                else:
                    stop.wait(0.001)

        with _started(_watcher(tmp_path, slots, **QUIET)):
            writer = threading.Thread(target=finish, name="test-finisher")
            writer.start()
            try:
                _move_in(tmp_path, names)
                wait_for(lambda: len(slots.claimed) == len(names), what="every file claimed")
            finally:
                stop.set()
                writer.join()
        assert slots.claimed == names
        assert list((tmp_path / "in").iterdir()) == []

    def test_files_turned_away_while_the_scanner_sleeps_are_offered_on_room(self, tmp_path) -> None:
        """With no slot, an event offers once and the rest only queue; `room` takes them in order.

        Nothing else wakes the scanner (no periodic scan or retry within the test), so the files
        can only have been taken because `room` was called.
        """
        slots = Slots(tmp_path, size=0)
        names = [f"wait{i:02d}.png" for i in range(20)]
        with _started(_watcher(tmp_path, slots, **QUIET)) as watcher:
            _move_in(tmp_path, names)
            wait_for(lambda: watcher.waiting == len(names), what="every file queued")
            assert slots.offers == [(names[0], len(names[0]))]  # known full: no offer per event
            slots.release(len(names))
            wait_for(lambda: len(slots.claimed) == len(names), what="the queued files claimed")
            assert watcher.waiting == 0
        assert slots.claimed == names

    def test_polling_files_settle_for_stable_s_however_often_room_is_called(self, tmp_path) -> None:
        """Polling: a growing file is never offered before it is stable, even under room() calls.

        A complete file waits for a slot all along, so each `room` call wakes the scanner.
        """
        slots = Slots(tmp_path, size=0)
        stop = threading.Event()
        watcher = _watcher(tmp_path, slots, mode="polling", poll_interval_s=0.05, stable_s=0.5)
        with _started(watcher):
            (tmp_path / "in" / "complete.png").write_bytes(b"x" * 100)
            wait_for(lambda: slots.offers != [], what="the complete file offered")

            def knock() -> None:
                while not stop.wait(0.005):
                    watcher.room()

            knocker = threading.Thread(target=knock, name="test-room-caller")
            knocker.start()
            try:
                with (tmp_path / "in" / "growing.png").open("wb") as fh:
                    for _ in range(8):
                        fh.write(b"y" * 1000)
                        fh.flush()
                        threading.Event().wait(0.15)
                        assert all(name == "complete.png" for name, _ in slots.offers)
            finally:
                stop.set()
                knocker.join()
            slots.release(2)
            wait_for(lambda: len(slots.claimed) == 2, what="both files claimed")
        assert slots.claimed == ["complete.png", "growing.png"]
        assert ("growing.png", 8000) in slots.offers
        assert all(size == 8000 for name, size in slots.offers if name == "growing.png")

    def test_the_work_per_freed_slot_does_not_grow_with_the_files_waiting(self, tmp_path) -> None:
        """Each `room` call looks at the same few tracker entries with 20 or 400 files waiting."""
        slots = Slots(tmp_path, size=0)
        examined = [0]
        watcher = _watcher(tmp_path, slots, **QUIET)
        watcher._settling = _CountingDict(examined)
        watcher._queued = _CountingOrderedDict(examined)

        def per_room(calls: int) -> list[int]:
            counts = []
            for _ in range(calls):
                before, offers = examined[0], len(slots.offers)
                slots.release()
                wait_for(lambda o=offers: len(slots.offers) == o + 2, what="a claim and a BUSY")
                counts.append(examined[0] - before)
            return counts

        with _started(watcher):
            _move_in(tmp_path, [f"few{i:03d}.png" for i in range(30)])
            wait_for(lambda: watcher.waiting == 30, what="30 files queued")
            few = per_room(10)
            _move_in(tmp_path, [f"many{i:03d}.png" for i in range(400)])
            wait_for(lambda: watcher.waiting == 420, what="420 files queued")
            many = per_room(10)
        assert min(few) >= 1  # the counting sets are the ones in use
        assert max(few) <= 4
        assert max(many) == max(few)

    def test_files_beyond_the_memory_bound_are_taken_by_a_scan_once_the_queue_empties(
        self, tmp_path, monkeypatch
    ) -> None:
        """Past MAX_TRACKED, events are dropped from memory; a scan takes them when room allows."""
        monkeypatch.setattr(watch, "MAX_TRACKED", 5)
        slots = Slots(tmp_path, size=0)
        names = [f"bound{i:02d}.png" for i in range(20)]
        with _started(_watcher(tmp_path, slots, stable_s=0.0, **QUIET)) as watcher:
            _move_in(tmp_path, names)
            wait_for(lambda: len(slots.offers) == 1 and watcher.waiting == 5, what="5 queued")
            slots.release(len(names))
            wait_for(lambda: len(slots.claimed) == len(names), what="every file claimed")
        assert slots.claimed[:5] == names[:5]
        assert sorted(slots.claimed) == names
