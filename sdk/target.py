"""Targets: where a call is delivered.

``poll://any@<group>`` (any member of the group; also accepted: a bare group name). The
``poll://uni@<group>/<pid>`` form (one member) is recognised and refused with
:class:`BadTarget` for now: lb load-balances, it does not pin work to a process yet.
"""

from __future__ import annotations

from lb.broker.errors import BadInput, BadTarget
from lb.broker.keys import check_group

__all__ = ["parse_target"]


def parse_target(target: str) -> str:
    """The group a target delivers to, or :class:`BadTarget` with what is wrong."""
    if not isinstance(target, str) or not target or len(target) > 200 or "\x00" in target:
        raise BadTarget(f"target {str(target)[:60]!r} is not of the form poll://any@<group>")
    if "://" not in target:
        try:
            return check_group(target)
        except BadInput as exc:  # a bare group name: say what a group name may be
            raise BadTarget(f"{exc} (or give a target: poll://any@<group>)") from None
    scheme, rest = target.split("://", 1)
    if scheme != "poll":
        raise BadTarget(f"target scheme {scheme[:20]!r} is not supported; use poll://any@<group>")
    if rest.startswith("uni@"):
        raise BadTarget("poll://uni@... targets are not supported yet; use poll://any@<group>")
    if not rest.startswith("any@"):
        raise BadTarget(f"target {target[:60]!r} must be poll://any@<group>")
    group = rest[4:]
    try:
        return check_group(group)
    except BadInput:
        raise BadTarget(
            f"target {target[:60]!r} names no valid group (letters, digits, '_', '.', '-')"
        ) from None
