"""``fewstep schema``: the JSON Schema of recipes."""
from __future__ import annotations

import json


def test_schema_is_json(cli):
    res = cli("schema")
    assert res.exit_code == 0 and "Objective_fm" in json.loads(res.stdout)["$defs"]
