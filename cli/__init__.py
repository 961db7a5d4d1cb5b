"""The ``toygres`` command line: ``serve`` and ``migrate`` on this host, HTTP client commands else.

An entry point; :mod:`cli.main` holds the Typer app, :mod:`cli.serve` the one-process server.
"""
