"""The durability package's public names (a change here is an API change)."""

import twin.durability


def test_durability_exports() -> None:
    assert sorted(twin.durability.__all__) == [
        "Durability",
        "FORMAT_VERSION",
        "JetStreamIngestor",
        "SequenceTracker",
        "Snapshot",
        "SnapshotError",
        "SnapshotStore",
        "StartPosition",
        "durable_name",
    ]
    for name in twin.durability.__all__:
        assert getattr(twin.durability, name) is not None


def test_durable_name_comes_from_config_or_the_pod_hostname() -> None:
    from twin.durability import durable_name

    assert durable_name("explicit") == "explicit"
    assert durable_name("", "polaris-twin-7d9f.c-x") == "twin-polaris-twin-7d9f_c-x"
