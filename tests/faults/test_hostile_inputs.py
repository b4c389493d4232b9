"""The hostile-input suite of issue 17: one test per defect, each against a real twin on a
real nats-server, asserting exact outcomes (defects 0 and 12 have their own files:
tests/faults/test_jetstream_lost_delivery.py and tests/ingest/test_subscription_confirmed.py).
"""

from __future__ import annotations

import logging

from faults.js_harness import manage

PASSWORD = "S3cr3tPass"


async def test_defect8_get_config_and_logs_redact_every_url_of_a_list(nats_server, make_twin, channel_for, caplog) -> None:
    host_port = nats_server.url.removeprefix("nats://")
    url = f"nats://twin:{PASSWORD}@{host_port},nats://twinuser:{PASSWORD}x@127.0.0.1:1"
    caplog.set_level(logging.INFO)
    app = await make_twin(url)
    resp = await manage(channel_for(app), "get_config")
    assert resp.success
    assert PASSWORD not in resp.result and "twin:" not in resp.result
    assert "nats://***@127.0.0.1:1" in resp.result
    shown = "\n".join(logging.Formatter("%(message)s").format(r) for r in caplog.records)
    # The records themselves: every place that logs a URL passes it through the redactor.
    assert PASSWORD not in shown
