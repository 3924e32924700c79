"""``fewstep schema``: the JSON Schema of recipes for the installed components."""
from __future__ import annotations

import json

from fewstep.cli.common import clean_errors


@clean_errors
def schema() -> None:
    """Print the JSON Schema of recipes (every installed component's fields, for editors).

    \b
    Example:
      fewstep schema > recipe.schema.json
    """
    from fewstep.config import recipe_schema

    print(json.dumps(recipe_schema(), indent=1))
