"""``fewstep plugins``: every plugin and entry, as a table and as JSON."""
from __future__ import annotations

import json


def test_plugins_lists_entries_with_their_plugin(cli):
    res = cli("plugins", "--json")
    assert res.exit_code == 0
    data = json.loads(res.stdout)
    objectives = {e["name"]: e["plugin"] for e in data["components"]["objectives"]}
    assert objectives["fm"] == "fm" and objectives["imm"] == "imm"
    assert {p["name"] for p in data["plugins"]} >= {"core", "fm", "imm"}
    res = cli("plugins")
    assert res.exit_code == 0 and "pushforward" in res.stdout
