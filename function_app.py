"""Azure Functions entry point (Python v2 programming model): build the app, register the blueprints.

Everything else lives in ``functions/``; see ``docs/functions.md``.
"""

from functions import dispatch, sweep
from functions.http import create_function_app

app = create_function_app()
app.register_functions(dispatch.bp)
app.register_functions(sweep.bp)
