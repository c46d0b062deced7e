"""Options and arguments shared by commands, and the checks that turn bad input into exit 2
before anything runs: --url, --json, seconds, JSON values, job ids."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import click

from ...exceptions import InvalidURL
from ...store.connection import DEFAULT_URL, URL_ENV, validate_url
from ...store.protocol import JOB_ID_RE
from .errors import BadInput

URL_HELP = f"Redis URL (default: ${URL_ENV}, else {DEFAULT_URL})"


def check_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The --url callback: a bad URL stops the command before anything runs, in one line
    (exit 2) that says whether it came from --url or $REDIS_URL."""
    if value is None:
        return None
    try:
        return validate_url(value)
    except InvalidURL as exc:
        source = ctx.get_parameter_source(param.name or "url")
        where = f"${URL_ENV}" if source == click.core.ParameterSource.ENVIRONMENT else "--url"
        raise BadInput(f"{where}: {exc}") from None


def url_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--url", envvar=URL_ENV, metavar="URL", help=URL_HELP, callback=check_url)(
        func
    )


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        func
    )


class Seconds(click.FloatRange):
    """A finite number of seconds: click's FloatRange lets nan and inf through."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


def json_value(text: str, param: click.Parameter | None) -> Any:
    """A JSON literal: 3, 2.5, true, null, "text" (with its quotes), [1, 2], {"a": 1}."""
    try:
        value = json.loads(text)
        # A "\ud800" escape parses to a string that cannot be sent as UTF-8.
        json.dumps(value, ensure_ascii=False).encode()
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, UnicodeEncodeError):
            problem = "holds a lone surrogate (\\ud800-\\udfff), which is not text"
        elif isinstance(exc, RecursionError):
            problem = "is nested too deeply"
        else:
            problem = "is not a JSON value (a string needs JSON quotes, e.g. '\"text\"')"
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise click.BadParameter(f"{shown!r} {problem}", param=param) from None
    return value


def check_job_ids(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Job id arguments: malformed ones are bad input (exit 2), not jobs that do not exist."""
    for job_id in (value,) if isinstance(value, str) else value:
        if not JOB_ID_RE.match(job_id):
            raise BadInput(
                f"invalid job id {job_id!r}: use 1-256 characters from letters, digits"
                " and _.:- starting with a letter or digit"
            )
    return value


def json_args(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[Any]:
    return [json_value(text, param) for text in value]


def json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    parsed = json_value(value, param)
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"a\": 1}'", param=param)
    return parsed
