"""What the CLI sends to prove who is calling: a bearer token, a function key, or both.

In order of preference:

- ``--token`` / ``TOYGRES_TOKEN``: a bearer token obtained elsewhere (``az account get-access-token
  --scope api://<app id>/.default``); prefer the environment variable, since a command line is
  visible to other users of the machine and lands in shell history;
- ``--scope`` / ``TOYGRES_API_SCOPE``: the CLI gets a token for that scope itself, with
  azure-identity's ``DefaultAzureCredential`` (the Azure CLI login, a managed identity, workload
  identity, environment credentials...), when it sends its first request;
- ``--function-key`` / ``TOYGRES_FUNCTION_KEY``: the Functions host key, sent as
  ``x-functions-key``, for a deployment that still gates the API with one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FUNCTION_KEY_HEADER = "x-functions-key"


class CredentialError(Exception):
    """No token could be obtained; the message says what to do."""


@dataclass
class ApiCredentials:
    token: str | None = None
    scope: str | None = None
    function_key: str | None = None
    _acquired: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """The headers of every request; a token for ``scope`` is acquired once, on first use."""
        headers: dict[str, str] = {}
        bearer = self.token or self._token_for_scope()
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if self.function_key:
            headers[FUNCTION_KEY_HEADER] = self.function_key
        return headers

    def _token_for_scope(self) -> str | None:
        if self.scope is None:
            return None
        if self._acquired is None:
            # local: only users of --scope pay for importing azure-identity
            from azure.core.exceptions import ClientAuthenticationError
            from azure.identity import DefaultAzureCredential

            try:
                with DefaultAzureCredential(exclude_interactive_browser_credential=True) as credential:
                    self._acquired = credential.get_token(self.scope).token
            except ClientAuthenticationError as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CredentialError(
                    f"could not get a token for {self.scope}: {first_line}. Sign in with `az login` "
                    "(or set TOYGRES_TOKEN)"
                ) from None
        return self._acquired
