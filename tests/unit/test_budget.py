"""CrashBudget: a sliding window of restarts per worker slot with exponential backoff; time is
always passed in explicitly."""

from __future__ import annotations

from devserve.supervision.budget import CrashBudget, RestartDecision


def test_first_crash_is_allowed_with_base_backoff() -> None:
    budget = CrashBudget(max_restarts=3, window=60.0, base_backoff=0.5, max_backoff=30.0)
    decision = budget.on_crash(100.0)
    assert decision == RestartDecision(allowed=True, restarts_used=1, budget=3, backoff=0.5)
    assert budget.used(100.0) == 1
    assert not budget.failed


def test_backoff_doubles_per_crash_in_the_window() -> None:
    budget = CrashBudget(max_restarts=5, window=60.0, base_backoff=0.5, max_backoff=30.0)
    backoffs = [budget.on_crash(10.0 + i).backoff for i in range(5)]
    assert backoffs == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_is_capped() -> None:
    budget = CrashBudget(max_restarts=10, window=600.0, base_backoff=1.0, max_backoff=5.0)
    backoffs = [budget.on_crash(float(i)).backoff for i in range(6)]
    assert backoffs == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_budget_exhausted_within_the_window() -> None:
    budget = CrashBudget(max_restarts=3, window=60.0)
    for i in range(3):
        assert budget.on_crash(float(i)).allowed
    decision = budget.on_crash(3.0)
    assert decision == RestartDecision(allowed=False, restarts_used=3, budget=3, backoff=0.0)
    assert budget.failed


def test_failed_slot_stays_failed_until_reset() -> None:
    budget = CrashBudget(max_restarts=2, window=10.0)
    budget.on_crash(0.0)
    budget.on_crash(1.0)
    assert not budget.on_crash(2.0).allowed
    # Even long after the window, a failed slot is not silently revived.
    later = budget.on_crash(1000.0)
    assert not later.allowed
    assert budget.failed
    budget.reset()
    assert not budget.failed
    assert budget.used(1000.0) == 0
    after_reset = budget.on_crash(1001.0)
    assert after_reset.allowed and after_reset.restarts_used == 1 and after_reset.backoff == 0.5


def test_window_slides() -> None:
    budget = CrashBudget(max_restarts=2, window=10.0, base_backoff=1.0)
    budget.on_crash(0.0)
    budget.on_crash(5.0)
    assert budget.used(9.0) == 2
    assert budget.used(10.0) == 2  # exactly `window` old still counts
    assert budget.used(10.5) == 1  # the crash at 0.0 has left the window
    decision = budget.on_crash(10.5)
    assert decision.allowed
    assert decision.restarts_used == 2
    assert decision.backoff == 2.0  # one crash (at 5.0) still in the window before this one


def test_spaced_out_crashes_never_exhaust_the_budget() -> None:
    budget = CrashBudget(max_restarts=2, window=10.0, base_backoff=0.5)
    for i in range(20):
        decision = budget.on_crash(i * 11.0)
        assert decision.allowed
        assert decision.restarts_used == 1
        assert decision.backoff == 0.5  # the backoff resets once old crashes expire
    assert not budget.failed


def test_used_does_not_record_anything() -> None:
    budget = CrashBudget(max_restarts=1, window=10.0)
    for _ in range(5):
        assert budget.used(1.0) == 0
    assert budget.on_crash(1.0).allowed


def test_reset_clears_history() -> None:
    budget = CrashBudget(max_restarts=3, window=60.0, base_backoff=0.5)
    budget.on_crash(1.0)
    budget.on_crash(2.0)
    budget.reset()
    assert budget.used(3.0) == 0
    assert budget.on_crash(3.0).backoff == 0.5


def test_defaults() -> None:
    budget = CrashBudget()
    decisions = [budget.on_crash(float(i)) for i in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[0].budget == 5
    assert decisions[0].backoff == 0.5
