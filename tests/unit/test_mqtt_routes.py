"""Topic routes of the MQTT input driver: filter matching, tag templates, subscriptions (pure)."""

from __future__ import annotations

import pytest

from drivers.mqtt_input import route_can_name, route_tag_name, subscriptions, wildcard_segments
from gateway.config import TopicRoute


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("plant/+/gas/+", "plant/l1/gas/h2", ["l1", "h2"]),
        ("plant/+/gas/+", "plant/l1/gas", None),
        ("plant/+/gas/+", "plant/l1/gas/h2/raw", None),
        ("plant/+/gas/+", "plant/l1/vib/h2", None),
        ("plant/+/gas/+", "plant//gas/h2", ["", "h2"]),  # an empty level is a level
        ("plant/+/#", "plant/l1/gas/h2", ["l1"]),
        ("plant/+/#", "plant/l1", ["l1"]),  # '#' also matches the parent level
        ("plant/+/#", "plant", None),
        ("+/x", "$SYS/x", None),  # wildcards at the start never match $ topics
        ("#", "$SYS/broker", None),
        ("$SYS/+", "$SYS/broker", ["broker"]),
        ("a/b", "a/b", []),
    ],
)
def test_wildcard_segments(topic_filter: str, topic: str, expected: list[str] | None) -> None:
    assert wildcard_segments(topic_filter, topic) == expected


def test_route_tag_name() -> None:
    route = TopicRoute(topic="plant/+/gas/+", tag="gas.{2}")
    assert route_tag_name(route, "plant/l1/gas/h2") == "gas.h2"
    assert route_tag_name(route, "plant/l1/vib/h2") is None
    both = TopicRoute(topic="+/sensors/+", tag="{1}.{2}.{1}")
    assert route_tag_name(both, "dry/sensors/temp") == "dry.temp.dry"
    # Whatever a sender puts in a level ends up in the name; lookup decides, nothing is guessed.
    assert route_tag_name(route, "plant/l1/gas/../../x") is None
    assert route_tag_name(route, "plant/l1/gas/H2 raw") == "gas.H2 raw"


@pytest.mark.parametrize(
    ("template", "name", "possible"),
    [
        ("gas.{1}", "gas.h2", True),
        ("gas.{1}", "gas.", True),  # an empty level
        ("gas.{1}", "vib.h2", False),
        ("gas.{1}_raw", "gas.h2_raw", True),
        ("gas.{1}_raw", "gas.h2", False),
        ("{1}.{2}", "dry.temp", True),
        ("a+b.{1}", "a+b.x", True),  # literal parts are literal, not regex
        ("a+b.{1}", "aab.x", False),
    ],
)
def test_route_can_name(template: str, name: str, possible: bool) -> None:
    assert route_can_name(TopicRoute(topic="p/+/+", tag=template), name) is possible


def test_subscriptions_skip_topics_a_filter_covers() -> None:
    subs = subscriptions(
        ["plant/l1/gas/o2", "other/x", "plant/l1/vib"],
        ["plant/+/gas/+", "plant/+/gas/+", "other/#"],
    )
    assert subs == ["plant/+/gas/+", "other/#", "plant/l1/vib"]
    assert subscriptions(["a", "b"], []) == ["a", "b"]
