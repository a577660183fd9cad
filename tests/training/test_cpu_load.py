"""The one warning a CPU run gives when its torch threads will fight for cores."""

from __future__ import annotations

import logging

import pytest

from convlab.training import cpu_load
from convlab.training.cpu_load import oversubscription, warn_if_oversubscribed


def test_more_threads_than_cores_is_named_with_the_fix():
    message = oversubscription(threads=4, processes=2, cores=4, load=0.0)
    assert message.startswith("torch runs 4 thread(s) in each of 2 process(es), 8 in all, on 4 core(s)")
    assert message.endswith("set threads=2")


def test_a_busy_machine_is_named_with_its_load():
    message = oversubscription(threads=2, processes=1, cores=2, load=7.9)
    assert (
        message.startswith("the machine is busy (load average 7.9 on 2 core(s))") and "threads=1" in message
    )


@pytest.mark.parametrize(
    ("threads", "processes", "cores", "load"),
    [(2, 1, 2, 0.3), (1, 1, 2, 9.0), (1, 2, 2, 1.0), (4, 1, 8, None)],
)
def test_no_warning_when_the_threads_fit(threads: int, processes: int, cores: int, load: float | None):
    assert oversubscription(threads, processes, cores, load) is None


def test_the_warning_is_logged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    monkeypatch.setattr(cpu_load.os, "getloadavg", lambda: (12.0, 6.0, 3.0))
    with caplog.at_level(logging.WARNING, logger="convlab.training.cpu_load"):
        assert warn_if_oversubscribed(threads=2, processes=1, cores=2) is not None
    assert [record.getMessage() for record in caplog.records] == [oversubscription(2, 1, 2, 12.0)]
