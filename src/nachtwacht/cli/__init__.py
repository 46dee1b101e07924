"""The `nachtwacht` command: a Typer root that mounts each domain's commands."""
