"""`pyscheduler pool`: the command line of the pool (groups from --group specs and a --config
file, the URL from --url, the file or $REDIS_URL)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from ...exceptions import InvalidURL, PySchedulerError
from ...store.connection import DEFAULT_URL, URL_ENV, redacted, validate_url
from .config import DEFAULT_CHECK_INTERVAL, DEFAULT_COOLDOWN, DEFAULT_TARGET_LATENCY, PoolConfig
from .config_parsing import CONFIG_EXAMPLE, SPEC_SYNTAX, load_config, parse_group_spec
from .supervisor import Pool

log = logging.getLogger("pyscheduler.pool")


def _verbatim(text: str) -> str:
    """Help text that click prints as written (each paragraph marked with \\b)."""
    return "\n\n".join(f"\b\n{paragraph}" for paragraph in text.split("\n\n"))


@click.command(
    "pool",
    epilog=_verbatim(
        f"Group spec (--group):\n{SPEC_SYNTAX}\n\nConfig file (--config):\n{CONFIG_EXAMPLE}"
    ),
)
@click.option(
    "--url",
    envvar=URL_ENV,
    metavar="URL",
    help=f"Redis URL (default: the config file's url, else ${URL_ENV}, else {DEFAULT_URL})",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A TOML file with the groups (see below).",
)
@click.option(
    "-g",
    "--group",
    "group_specs",
    multiple=True,
    metavar="SPEC",
    help="A group, e.g. fast=fast,fast2:1-8 (repeatable; replaces a file's group of that name).",
)
@click.option(
    "--check-interval",
    type=float,
    default=None,
    help=f"Seconds between looks at the queues (default {DEFAULT_CHECK_INTERVAL}).",
)
@click.option(
    "--cooldown",
    type=float,
    default=None,
    help=f"Seconds without backlog before a group shrinks (default {DEFAULT_COOLDOWN:g}).",
)
@click.option(
    "--target-latency",
    type=float,
    default=None,
    help=f"Seconds a ready job should wait at most (default {DEFAULT_TARGET_LATENCY:g}).",
)
@click.option("--strict", is_flag=True, help="Workers run registered tasks (@task) only.")
@click.option(
    "-i", "--import", "imports", multiple=True, help="Module the workers import (repeatable)."
)
@click.option("--auto-load", is_flag=True, help="Workers load the Lua library if missing.")
@click.pass_context
def pool_command(
    ctx: click.Context,
    url: str | None,
    config_path: str | None,
    group_specs: tuple[str, ...],
    check_interval: float | None,
    cooldown: float | None,
    target_latency: float | None,
    strict: bool,
    imports: tuple[str, ...],
    auto_load: bool,
) -> None:
    """Run groups of worker processes, each on its queues, scaled by backlog.

    Each group runs between its min and max processes: more when the oldest ready job waits
    longer than the group's target latency (or the backlog would take longer to drain), fewer
    after a cooldown without backlog. SIGTERM drains every worker, then exits; a second signal
    stops them at once.
    """
    logging.basicConfig(  # a no-op under `pyscheduler`, which configures logging itself
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    defaults: dict[str, Any] = {}
    if cooldown is not None:
        defaults["cooldown"] = cooldown
    if target_latency is not None:
        defaults["target_latency"] = target_latency
    if strict:
        defaults["strict"] = True
    if imports:
        defaults["imports"] = list(imports)
    if auto_load:
        defaults["auto_load"] = True
    try:
        if config_path:
            config = load_config(config_path, defaults)
            groups = {g.name: g for g in config.groups}
        else:
            config = None
            groups = {}
        for spec in group_specs:
            group = parse_group_spec(spec, defaults)
            groups[group.name] = group
        if not groups:
            raise click.UsageError("give at least one --group SPEC or a --config file")
        from_cli = ctx.get_parameter_source("url") == click.core.ParameterSource.COMMANDLINE
        pool_config = PoolConfig(
            list(groups.values()),
            url=url if from_cli or config is None or config.url is None else config.url,
            check_interval=check_interval
            if check_interval is not None
            else (config.check_interval if config else DEFAULT_CHECK_INTERVAL),
        )
    except (ValueError, PySchedulerError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        validate_url(pool_config.resolved_url)
    except InvalidURL as exc:
        if from_cli:
            where = "--url"
        elif config is not None and config.url is not None:
            where = f"{config_path}: url"
        else:
            where = f"${URL_ENV}"
        raise InvalidURL(f"{where}: {exc}") from None  # exit 2 in one line (CliGroup)
    log.info("pool: Redis at %s", redacted(pool_config.resolved_url))
    sys.exit(Pool(pool_config).run())
