"""Azure Functions adapters: thin triggers over the control plane and the durable runtime.

- ``http``: the FastAPI app as one ASGI function;
- ``dispatch``: queue triggers that drain the engine's PostgreSQL queues when a hint arrives;
- ``sweep``: the every-minute timer that makes progress without hints and starts the Reconciler;
- ``hints``: the runtime's ``WorkHints`` over Azure Storage queues;
- ``host_state``: the control plane and runtime shared by all invocations in one worker process.

``function_app.py`` at the repository root wires them together.
"""
