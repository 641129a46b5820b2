"""The README's demo: the pool sends everything, the shared smtplib.SMTP breaks."""

from __future__ import annotations

import pytest

from smtppool.testing import demo


@pytest.mark.slow
def test_demo_shows_zero_pool_errors_and_shared_disconnects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A shortened demo run: 0 errors for the pool, disconnects for smtplib."""
    status = demo.main(
        [
            "--threads",
            "3",
            "--rounds",
            "2",
            "--per-round",
            "30",
            "--idle-timeout",
            "0.5",
        ]
    )

    out = capsys.readouterr().out
    assert status == 0
    rows = {line[:30].strip(): line[30:].split() for line in out.splitlines()}
    assert rows["messages sent"] == ["60", "60"]
    assert rows["messages the server received"] == ["60", "30"]
    assert rows["errors"] == ["0", "30"]
    assert "SMTPServerDisconnected: please run connect() first" in out
    assert "SMTPServerDisconnected: Connection unexpectedly closed" in out
