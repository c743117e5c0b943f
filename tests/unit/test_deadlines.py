"""shielded_deadline: a shielded cleanup's own limit, or a little past the caller's cancel, whichever is first."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from roost.runtime.deadlines import shielded_deadline

Clock = trio.testing.MockClock


@pytest.mark.timeout(10)
async def test_without_a_deadline_around_it_a_cleanup_gets_its_own_limit(autojump_clock: Clock) -> None:
    assert shielded_deadline(10, 1) == trio.current_time() + 10


@pytest.mark.timeout(10)
async def test_inside_a_grace_period_it_ends_shortly_after_the_grace_period(autojump_clock: Clock) -> None:
    with trio.move_on_after(3):
        assert shielded_deadline(10, 1) == trio.current_time() + 4
        assert shielded_deadline(2, 1) == trio.current_time() + 2  # its own limit comes first
        await trio.lowlevel.checkpoint()


@pytest.mark.timeout(10)
async def test_once_cancelled_it_gets_only_the_time_after_a_cancel(autojump_clock: Clock) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        assert shielded_deadline(10, 1) == trio.current_time() + 1
        await trio.lowlevel.checkpoint()


@pytest.mark.timeout(10)
async def test_a_shielded_wait_with_it_ends_one_second_after_the_grace_period(autojump_clock: Clock) -> None:
    began = trio.current_time()
    with trio.move_on_after(5):
        with trio.CancelScope(shield=True, deadline=shielded_deadline(60, 1)):
            await trio.sleep_forever()  # a server that never answers
    assert trio.current_time() - began == pytest.approx(6)
