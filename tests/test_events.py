"""The decision log: paged reads (`forge.events.page`, GET /-/forge/events) and bounded retention."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from forge import events
from forge.models import Event, db
from forge.testing import Forge


def _fill(forge: Forge, count: int, reason: str = "project_not_found") -> list[int]:
    """Write `count` events straight into the log (fast), alternating allowed and refused."""
    with forge.app.app_context():
        rows = [Event(at=forge.now(), method="GET", path=f"/p{i}.git/info/refs",
                      credential="anonymous", action="read_code", allowed=i % 2 == 1,
                      reason=reason if i % 2 == 0 else "public_project",
                      status=404 if i % 2 == 0 else 200, message="")
                for i in range(count)]
        db.session.add_all(rows)
        db.session.commit()
        return [row.id for row in rows]


@pytest.fixture
def retention(forge: Forge) -> Iterator[None]:
    config = forge.state.config
    yield
    forge.state.config = config


def test_events_page_defaults_to_1000_and_says_there_is_more(forge: Forge,
                                                              api: requests.Session) -> None:
    ids = _fill(forge, 1500)
    first = api.get(f"{forge.url}/-/forge/events")
    assert [e["id"] for e in first.json()] == ids[:1000]
    assert first.headers["X-Next-Since"] == str(ids[999])
    assert first.headers["Link"] == (f'<{forge.url}/-/forge/events?since={ids[999]}&limit=1000>; '
                                     'rel="next"')
    second = api.get(f"{forge.url}/-/forge/events", params={"since": ids[999]})
    assert [e["id"] for e in second.json()] == ids[1000:]
    assert "X-Next-Since" not in second.headers and "Link" not in second.headers


def test_events_limit_and_filters_page_through_the_log(forge: Forge, api: requests.Session) -> None:
    ids = _fill(forge, 25)
    seen: list[int] = []
    since = 0
    while True:
        response = api.get(f"{forge.url}/-/forge/events",
                           params={"since": since, "limit": 4, "allowed": "false"})
        seen += [e["id"] for e in response.json()]
        assert all(e["allowed"] is False for e in response.json())
        if "X-Next-Since" not in response.headers:
            break
        since = int(response.headers["X-Next-Since"])
    assert seen == ids[0::2]
    response = api.get(f"{forge.url}/-/forge/events", params={"reason": "public_project",
                                                              "status": 200, "limit": 100})
    assert [e["id"] for e in response.json()] == ids[1::2]


@pytest.mark.parametrize("params,message", [
    ({"limit": 10_001}, "limit must be from 1 to 10000"),
    ({"limit": 0}, "limit must be from 1 to 10000"),
    ({"limit": "x"}, "limit must be a whole number"),
    ({"since": "-1"}, "since must be a whole number"),
    ({"allowed": "maybe"}, "allowed must be true or false"),
    ({"status": "4o4"}, "status must be a whole number"),
    ({"since": "\u00b2"}, "since must be a whole number"),  # a digit to str.isdigit(), none to int()
    ({"limit": "\u00b2"}, "limit must be a whole number"),
    ({"user_id": "\u00b2"}, "user_id must be a whole number"),
])
def test_events_bad_parameters_are_400(forge: Forge, api: requests.Session,
                                       params: dict[str, object], message: str) -> None:
    response = api.get(f"{forge.url}/-/forge/events", params=params)
    assert (response.status_code, response.json()) == (400, {"message": message})


def test_events_since_beyond_any_id_is_empty(forge: Forge, api: requests.Session) -> None:
    _fill(forge, 3)
    response = api.get(f"{forge.url}/-/forge/events", params={"since": "9" * 30})
    assert (response.status_code, response.json()) == (200, [])


@pytest.mark.parametrize("name", ["user_id", "job_id", "project_id", "status"])
def test_events_filter_by_an_id_beyond_any_is_empty(forge: Forge, api: requests.Session,
                                                     name: str) -> None:
    _fill(forge, 3)
    response = api.get(f"{forge.url}/-/forge/events", params={name: "9" * 20})
    assert (response.status_code, response.json()) == (200, [])
    with forge.app.app_context():
        assert events.page(0, 5, **{name: 10**20}) == events.Page([], False, 0)


def test_events_retention_keeps_the_newest(forge: Forge, api: requests.Session,
                                           retention: None) -> None:
    ids = _fill(forge, 30)
    forge.state.config = forge.state.config.replace(event_retention=10)
    response = api.get(f"{forge.url}/-/forge/events")
    assert [e["id"] for e in response.json()] == ids[-10:]
    assert [e["id"] for e in forge.events()] == ids[-10:]


def test_events_module_page_and_prune(forge: Forge) -> None:
    ids = _fill(forge, 12)
    with forge.app.app_context():
        page = events.page(0, 5)
        assert ([e["id"] for e in page.events], page.more, page.next_since) == (ids[:5], True, ids[4])
        page = events.page(ids[9], 5)
        assert ([e["id"] for e in page.events], page.more) == (ids[10:], False)
        refused = events.page(0, 100, allowed=False, reason="project_not_found")
        assert [e["id"] for e in refused.events] == ids[0::2]
        with pytest.raises(ValueError, match="cannot filter events by colour"):
            events.page(0, 5, colour="red")
        assert events.prune(20) == 0
        assert events.prune(4) == 8
        db.session.commit()
        assert [e["id"] for e in events.page(0, None).events] == ids[-4:]
        assert events.prune(0) == 4
        db.session.commit()
        assert events.count() == 0


def test_forge_events_still_returns_everything(forge: Forge) -> None:
    ids = _fill(forge, 1200)
    assert [e["id"] for e in forge.events()] == ids
    assert [e["id"] for e in forge.events(since=ids[-3])] == ids[-2:]
    assert forge.last_event(allowed=False)["id"] == ids[-2]


def test_database_of_an_older_forge_gets_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    from forge.config import ForgeConfig
    from forge.server import ForgeServer

    config = ForgeConfig(data_dir=tmp_path, testing=True)
    ForgeServer(config).start().stop()
    with sqlite3.connect(tmp_path / "forge.db") as connection:  # as a forge before push options
        connection.execute("ALTER TABLE events DROP COLUMN push_options")
        connection.execute("DROP TABLE alembic_version")  # and before migrations
    server = ForgeServer(config).start()
    try:
        with sqlite3.connect(tmp_path / "forge.db") as connection:
            columns = {row[1] for row in connection.execute("PRAGMA table_info(events)")}
        assert "push_options" in columns
        answer = requests.get(f"{server.url}/-/forge/events",
                              headers={"PRIVATE-TOKEN": server.state.config.root_token})
        assert answer.status_code == 200
    finally:
        server.stop()
