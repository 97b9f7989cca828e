"""The reply's wait for its history after the database failed: short until a read succeeds,
the full budget again now and then for a database that is only slow."""

from bot.history_wait import HistoryWait


def test_after_a_failure_replies_wait_briefly_until_the_database_answers() -> None:
    now = [100.0]
    wait = HistoryWait(full_s=3.0, short_s=0.3, full_again_after_s=60.0, clock=lambda: now[0])
    assert wait.seconds() == 3.0
    assert wait.failed() is True and wait.failed() is False  # it opens once
    now[0] += 10
    assert wait.seconds() == 0.3
    now[0] += 50  # a minute after the read that waited the full budget: one waits it again
    assert [wait.seconds(), wait.seconds()] == [3.0, 0.3]
    assert wait.answered() is True and wait.answered() is False  # it closes once
    assert wait.seconds() == 3.0
