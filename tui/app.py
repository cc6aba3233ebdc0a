"""The console: an alert queue and, on Enter, one alert's explanation, features and evidence."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from appliance.service import Service

QUEUE_COLUMNS = ("ID", "Score", "Detector", "Trader", "Account", "Symbol", "Start (UTC)", "Events")


class AlertScreen(Screen):
    """One alert: why it scored as it did, its features, and where the raw evidence is."""

    BINDINGS: ClassVar = [
        Binding("escape,q", "app.pop_screen", "Back", id="alert.back", tooltip="Back to queue"),
    ]

    def __init__(self, alert: dict[str, Any]) -> None:
        super().__init__()
        self.alert = alert

    def compose(self) -> ComposeResult:
        a = self.alert
        yield Header()
        with VerticalScroll():
            yield Static(
                f"[b]Alert {a['id']}[/b]  score [b]{a['score']}[/b]  {a['detector']}  "
                f"trader {a['trader']}  account {a['account']}  {a['symbol']}\n"
                f"{a['start_ts']} → {a['end_ts']}  {a['n_events']} events\n"
                f"run {a['run_id']}  model {a['model_version']}  etl {a['etl_version']}",
                id="alert-header",
            )
            yield Static("[b]Why[/b]\n" + "\n".join(f"• {r}" for r in a["explanation"]),
                         id="alert-explanation")
            features = DataTable(id="alert-features", cursor_type="row")
            features.add_columns("Feature", "Value")
            for name, value in a["features"].items():
                features.add_row(name, "—" if value is None else f"{value:g}")
            yield features
            crumbs = a["breadcrumbs"]
            lines = [f"{c['path']}  lines {c['lines'][0]}–{c['lines'][1]}  bytes "
                     f"{c['offsets'][0]}–{c['offsets'][1]}  ({c['events']} events)"
                     for c in crumbs["files"]]  # fmt: skip
            yield Static("[b]Evidence[/b]\n" + "\n".join(lines), id="alert-breadcrumbs")
        yield Footer()


class SurveilApp(App):
    """Alert queue, highest score first."""

    TITLE = "surveil"
    BINDINGS: ClassVar = [
        Binding("q", "quit", "Quit", id="app.quit", tooltip="Leave the console"),
        Binding("r", "reload", "Reload", id="app.reload", tooltip="Re-read the alert queue"),
    ]

    def __init__(self, service: Service) -> None:
        super().__init__()
        self.service = service
        self.sub_title = f"user {service.user}"

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="queue", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#queue", DataTable)
        table.add_columns(*QUEUE_COLUMNS)
        self.action_reload()
        table.focus()

    def action_reload(self) -> None:
        table = self.query_one("#queue", DataTable)
        table.clear()
        for a in self.service.alerts():
            table.add_row(str(a["id"]), str(a["score"]), a["detector"], a["trader"],
                          a["account"] or "", a["symbol"], a["start_ts"][:23], str(a["n_events"]),
                          key=str(a["id"]))  # fmt: skip

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "queue" or event.row_key.value is None:
            return
        alert_id = int(event.row_key.value)
        self.service.record_view(alert_id, via="console")
        self.push_screen(AlertScreen(self.service.alert(alert_id)))


def run_console(service: Service) -> int:
    """Open the console until the user quits."""
    SurveilApp(service).run()
    return 0
