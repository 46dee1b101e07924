"""API errors are JSON with a message and the field they concern."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from nachtwacht.problems import Problem
from nachtwacht.store.db import StoreError


class ApiError(HTTPException):
    def __init__(
        self,
        status_code: int,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, detail, headers)
        self.field = field


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail, "field": exc.field},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        # the one place a domain's refusal becomes an HTTP status
        return JSONResponse(
            {"detail": exc.message, "field": exc.field}, status_code=exc.http_status
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        # the first part says where (body, query, path, header); a field may itself be "path"
        loc = list(first["loc"])
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        field = ".".join(str(p) for p in loc)
        if first.get("type") == "json_invalid":
            # the location of a JSON syntax error is a character offset, not a field
            field = "body"
        return JSONResponse(
            {
                "detail": first["msg"],
                "field": field or None,
                "errors": [
                    {"field": ".".join(str(p) for p in e["loc"][1:]), "message": e["msg"]}
                    for e in errors
                ],
            },
            status_code=422,
        )

    @app.exception_handler(StoreError)
    async def _store_down(_request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "field": None}, status_code=503)
