"""The console driven by Textual's Pilot against a real store."""

import asyncio

from textual.widgets import DataTable, Static

from appliance import pipeline
from appliance.ingest import ingest_file
from appliance.service import Service
from tests.scenarios import Book
from tui.app import AlertScreen, SurveilApp


def seeded_service(cfg, con, tmp_path) -> Service:
    book = Book()
    for k in range(3):
        book.spoof_cycle(k * 2.0, "S1", f"a{k}")
    for k in range(2):
        book.spoof_cycle(30 + k * 2.0, "S2", f"b{k}", symbol="NQZ6")
    ingest_file(cfg, con, book.write(tmp_path / "o.csv"), "csv", "t")
    pipeline.run(cfg, con, mode="inprocess")
    return Service(cfg, user="officer1")


def test_queue_lists_alerts_and_enter_opens_the_explained_alert(cfg, con, tmp_path):
    svc = seeded_service(cfg, con, tmp_path)
    expected = svc.alerts()

    async def drive():
        app = SurveilApp(svc)
        async with app.run_test() as pilot:
            queue = app.query_one("#queue", DataTable)
            assert queue.row_count == len(expected) == 2
            assert queue.get_row_at(0)[0] == str(expected[0]["id"])
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, AlertScreen)
            assert app.screen.alert["id"] == expected[0]["id"]
            why = str(app.screen.query_one("#alert-explanation", Static).render())
            assert "cancel timed off the fill" in why
            crumbs = str(app.screen.query_one("#alert-breadcrumbs", Static).render())
            assert "o.csv" in crumbs
            features = app.screen.query_one("#alert-features", DataTable)
            assert features.row_count == len(app.screen.alert["features"])
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, AlertScreen)
            await pilot.press("down", "enter")
            await pilot.pause()
            assert app.screen.alert["id"] == expected[1]["id"]

    asyncio.run(drive())
    views = [r for r in svc.audit_log() if r["action"] == "view_alert"]
    assert [(r["user"], r["target"]) for r in views] == [
        ("officer1", str(expected[1]["id"])), ("officer1", str(expected[0]["id"]))]
