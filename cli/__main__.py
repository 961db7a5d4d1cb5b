"""``python -m cli``: the ``toygres`` command run from a checkout."""

from cli.main import app

app()
