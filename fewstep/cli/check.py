"""``fewstep check RECIPE``: validate a recipe without running it."""
from __future__ import annotations

from typing import Annotated

import typer

from fewstep.cli.common import RecipeArg, SetOpt, clean_errors, err


@clean_errors
def check(
    recipe: RecipeArg,
    set_: SetOpt = None,
    show: Annotated[bool, typer.Option("--show", help="Print the resolved recipe (every default filled in).")] = False,
) -> None:
    """Validate a recipe against the installed components; exit 2 with one line per problem. Files it
    names that are not there yet (a data folder, reference statistics) are noted, not errors.

    \b
    Examples:
      fewstep check recipes/imm_cifar.yaml --show     # print the resolved recipe
      fewstep check recipes/imm_toy.yaml --set objective.group_size=8
    """
    from fewstep.config import dump_recipe, load_recipe
    from fewstep.config.recipe import missing_resources

    resolved = load_recipe(recipe, set_ or [])
    if show:
        print(dump_recipe(resolved), end="")
    else:
        print(f"{recipe}: ok ({resolved.objective.name} on {resolved.data.name}, "
              f"{resolved.network.name} network, {resolved.sampler.name} sampler)")
    for note in missing_resources(resolved):  # valid, but not runnable here yet
        err(f"note: {note}")
