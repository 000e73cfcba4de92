"""A route class for the data path: a valid JSON body reaches the handler in one step.

The stock FastAPI handler parses the body with ``json.loads``, checks the content type with
``email.message``, walks the dependency tree and validates the dict; on the path Fence calls
for every transfer that is a fifth of the request. For a route of the data path's shape (one
JSON body model, the ``trusted_or_user_caller`` dependency, a ``Response`` returned),
``DataPathRoute`` validates the raw bytes with pydantic's JSON parser and resolves the caller
directly. Anything else — another content type, an empty body, a body that fails validation —
goes through the stock handler (the body already read is reused), so every refusal is exactly
the stock one. The route's declaration, and so the OpenAPI document, does not change.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, get_type_hints

import fastapi.routing
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from app.api.deps import trusted_or_user_caller

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json"


class DataPathRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        stock: Handler = super().get_route_handler()
        shape = self._fast_shape()
        if shape is None:
            return stock
        model, body_name, caller_name = shape
        endpoint = self.endpoint
        validate = model.model_validate_json

        async def handler(request: Request) -> Response:
            if not _is_json(request.headers.get("content-type")):
                return await stock(request)
            raw = await request.body()
            try:
                body = validate(raw)
            except ValidationError:
                # The stock handler answers exactly as it always has (and in its order: the
                # caller's token is checked before the body's errors are reported).
                return await stock(request)
            caller = await trusted_or_user_caller(request)
            response: Response = await endpoint(**{body_name: body, caller_name: caller})
            return response

        return handler

    @property
    def one_step(self) -> bool:
        """Whether valid JSON bodies skip the stock handler on this route."""
        return self._fast_shape() is not None

    def _fast_shape(self) -> tuple[type[BaseModel], str, str] | None:
        """(body model, its parameter, the caller's parameter) when the route has exactly
        the data path's shape, else None."""
        dependant = self.dependant
        # Included with dependencies of its own (FastAPI builds the included route's handler
        # inside this context): those would be bypassed, so the stock handler serves it.
        including = getattr(fastapi.routing, "_effective_route_context_var", None)
        context = including.get() if including is not None else None
        if context is not None and getattr(context, "original_route", None) is self:
            if len(getattr(context, "dependencies", ())) != len(self.dependencies):
                return None
        if (
            dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or len(dependant.body_params) != 1
            or len(dependant.dependencies) != 1
            or dependant.dependencies[0].call is not trusted_or_user_caller
            or dependant.request_param_name
            or dependant.response_param_name
            or dependant.background_tasks_param_name
            or not inspect.iscoroutinefunction(self.endpoint)
        ):
            return None
        body_param = dependant.body_params[0]
        model = body_param.field_info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        returns: Any = get_type_hints(self.endpoint).get("return")
        if not (isinstance(returns, type) and issubclass(returns, Response)):
            return None
        caller_name = dependant.dependencies[0].name
        if caller_name is None:
            return None
        return model, body_param.name, caller_name
