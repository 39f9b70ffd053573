"""One REST call through the official client's ApiClient, on every client from 27.2 up.

The client changed generators in 31: before, `ApiClient.call_api(path, method, ...)` did everything
and raised `ApiException` on a non-2xx answer; from 31 on, `param_serialize` builds the request and
`call_api` only sends it, returning a `RESTResponse` whatever the status. kfp 2.17 pins
kubernetes<31 and the Kubeflow SDK <36, so fairing must speak both: which one is chosen by the
method the client has, not by its version string (a patched or vendored client says the truth
through its methods).
"""
from __future__ import annotations

from typing import Any

from .errors import HTTPStatusError


def send(api: Any, method: str, path: str, *, query: list, headers: dict, body: Any,
         timeout: tuple[float, float]):
    """Send one request; returns the unread urllib3 response of a 2xx answer. A non-2xx answer
    raises `HTTPStatusError` (new client) or `ApiException` (old client): both carry .status,
    .reason and .body, and `Kube.translate` reads either."""
    if hasattr(api, "param_serialize"):  # kubernetes >= 31
        method, url, hdrs, data, _ = api.param_serialize(
            method, path, query_params=query, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        resp = api.call_api(method, url, header_params=hdrs, body=data, _request_timeout=timeout)
        if not 200 <= resp.status <= 299:
            raise HTTPStatusError(resp.status, resp.reason, resp.read())
        return resp.response
    # kubernetes 27.2 - 30: with _preload_content=False the urllib3 response comes back unread
    # (and a non-2xx answer is an ApiException, raised by the client's REST layer).
    return api.call_api(path, method, query_params=query, header_params=headers, body=body,
                        auth_settings=["BearerToken"], _preload_content=False,
                        _return_http_data_only=True, _request_timeout=timeout)
