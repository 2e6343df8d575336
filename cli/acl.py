"""``lb acl``: print the least-privilege Redis ACL rules of a role (see lb.broker.acl)."""

from __future__ import annotations

import click

from lb.broker.acl import ROLES, rules
from lb.cli.common import prefix_option

__all__ = ["acl"]


@click.command()
@click.option("--role", type=click.Choice(sorted(ROLES)), default="worker", show_default=True)
@click.option("--user", default=None, help="User name (default lb-<role>).")
@prefix_option
def acl(role: str, user: str | None, prefix: str) -> None:
    """Print the ACL SETUSER line for a worker or a client user of this deployment."""
    name = user or f"lb-{role}"
    click.echo(f"ACL SETUSER {name} reset on >CHANGE-ME {rules(role, prefix)}")
