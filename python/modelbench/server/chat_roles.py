"""Which message roles a chat template knows, so that a chat request with a
role the model was never shown (``"robot"``) is a 400 naming the accepted
ones, not a prompt the model misreads.

A template's roles are the standard ones (system, user, assistant, tool:
every template either handles them or refuses them itself, with its own
message) plus every string the template compares a role against:
``message['role'] == 'ipython'``, ``message.role in ['developer', ...]``,
``role != 'function'``. They are read from the template's syntax tree
(Jinja's parser, the same syntax the renderer reads), not from its text, so
quoting and spacing do not matter. A template that compares no role (it
writes any role as it comes, like ChatML's) accepts the standard roles only:
it would render any string, but the model knows only those."""

from __future__ import annotations

from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2 import nodes

from modelbench.server.protocol import STANDARD_ROLES


def _is_role(node: nodes.Node) -> bool:
    """``message['role']``, ``message.role``, ``role`` (a loop variable), or a filter of one."""
    if isinstance(node, nodes.Filter) and node.node is not None:
        return _is_role(node.node)
    if isinstance(node, nodes.Getitem):
        return isinstance(node.arg, nodes.Const) and node.arg.value == "role"
    if isinstance(node, nodes.Getattr):
        return node.attr == "role"
    return isinstance(node, nodes.Name) and node.name == "role"


def _strings(node: nodes.Node) -> set[str]:
    """The string constants ``node`` is or holds (a list or tuple of them)."""
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (nodes.List, nodes.Tuple)):
        return {s for item in node.items for s in _strings(item)}
    return set()


@lru_cache(maxsize=64)
def compared_roles(source: str) -> frozenset[str]:
    """Every role literal the chat template ``source`` compares a role
    against (none for a template that writes any role as it comes, or one
    that does not parse)."""
    roles: set[str] = set()
    try:
        tree = jinja2.Environment(extensions=[jinja2.ext.loopcontrols]).parse(source)
    except jinja2.TemplateSyntaxError:
        return frozenset()
    for compare in tree.find_all(nodes.Compare):
        operands = [compare.expr, *(op.expr for op in compare.ops)]
        if any(_is_role(operand) for operand in operands):
            for operand in operands:
                roles |= {s for s in _strings(operand) if s.strip()}
    return frozenset(roles)


@lru_cache(maxsize=64)
def writes_roles(source: str) -> bool:
    """Whether the chat template ``source`` writes a message's role into the
    prompt as it comes (ChatML's ``'<|im_start|>' + message['role']``), so
    that any role renders, rather than writing each role it knows its own way."""
    try:
        tree = jinja2.Environment(extensions=[jinja2.ext.loopcontrols]).parse(source)
    except jinja2.TemplateSyntaxError:
        return False
    return any(
        _is_role(node)
        for output in tree.find_all(nodes.Output)
        for node in output.find_all((nodes.Getitem, nodes.Getattr, nodes.Name, nodes.Filter))
    )


def template_roles(source: str) -> frozenset[str]:
    """The roles the chat template ``source`` knows. A template that does not
    parse gets the standard roles (rendering it will say what is wrong)."""
    return frozenset(STANDARD_ROLES) | compared_roles(source)


def unknown_role(roles: list[str], source: str) -> str | None:
    """The first of ``roles`` the template does not know, or None."""
    known = template_roles(source)
    return next((role for role in roles if role not in known), None)
