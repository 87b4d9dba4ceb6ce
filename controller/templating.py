"""The part of Jinja that inventories use in connection variables, evaluated without Jinja
(pure; the environment is passed in).

Ansible evaluates any Jinja in an inventory variable when a task reads it. mlfleet reads
connection and agent settings from the same variables, and evaluates what it can evaluate
exactly and safely:

- `{{ name }}`: another variable of the same host (itself evaluated the same way, at most
  `MAX_DEPTH` levels deep); `inventory_hostname` is the host's name;
- `{{ lookup('env', 'NAME') }}`: the controller's environment variable (empty when unset,
  as Ansible's env lookup gives);
- either followed by `| default('text')` or `| default('text', true)` (the second form also
  replaces an empty value, as Jinja's `default(..., boolean=true)` does);
- text around them: `{{ site }}-gw.example.com`.

Anything else (other lookups and filters, `{% ... %}`, arithmetic, magic variables such as
`ansible_playbook_python`) raises TemplateUnsupported naming the expression; the caller turns
that into one line for the hosts a command touches, and leaves other hosts alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

MAX_DEPTH = 10  # variables referring to variables

_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)
_STRING = r"""(?:'([^'\\]*)'|"([^"\\]*)")"""
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*")
_ENV = re.compile(rf"\s*lookup\(\s*{_STRING}\s*,\s*{_STRING}\s*\)\s*")
_DEFAULT = re.compile(
    rf"\|\s*(?:default|d)\(\s*{_STRING}\s*(?:,\s*(true|True|false|False)\s*)?\)\s*$"
)


class UnsafeText(str):
    """A `!unsafe` string (Ansible's tag): text that is never evaluated as a template."""


class TemplateUnsupported(ValueError):
    """A template mlfleet does not evaluate; the message names the expression."""


def is_template(value: Any) -> bool:
    """Whether a value holds Jinja (`{{`, `{%` or `{#`) to evaluate (`!unsafe` text never)."""
    return (
        isinstance(value, str)
        and not isinstance(value, UnsafeText)
        and ("{{" in value or "{%" in value or "{#" in value)
    )


def evaluate(
    text: str,
    variables: Mapping[str, Any],
    host_name: str,
    environ: Mapping[str, str],
) -> str:
    """`text` with each supported `{{ ... }}` replaced by its value."""
    return _Scope(variables, host_name, environ).evaluate(text, 0)


@dataclass(frozen=True)
class _Scope:
    """What a host's templates are evaluated against."""

    variables: Mapping[str, Any]
    host_name: str
    environ: Mapping[str, str]

    def evaluate(self, text: str, depth: int) -> str:
        if "{%" in text or "{#" in text:
            raise TemplateUnsupported("Jinja statements ({% ... %}) and comments are not evaluated")
        if depth > MAX_DEPTH:
            raise TemplateUnsupported(f"variables refer to variables more than {MAX_DEPTH} deep")
        return _EXPRESSION.sub(lambda match: self._expression(match.group(1), depth), text)

    def _expression(self, source: str, depth: int) -> str:
        body, fallback, also_empty = source, None, False
        default = _DEFAULT.search(source)
        if default is not None:
            body = source[: default.start()]
            fallback = _text(default.group(1), default.group(2))
            also_empty = (default.group(3) or "").lower() == "true"
        value = self._value(body, depth)
        if fallback is not None and (value is None or (also_empty and value == "")):
            return fallback
        if value is None:
            raise TemplateUnsupported(f"{{{{{source}}}}} uses {body.strip()}, which is not defined")
        return value

    def _value(self, body: str, depth: int) -> Optional[str]:
        """The text of a variable or env lookup; None: undefined."""
        env = _ENV.fullmatch(body)
        if env is not None:
            plugin = _text(env.group(1), env.group(2))
            if plugin != "env":
                raise TemplateUnsupported(f"lookup('{plugin}', ...) is not evaluated")
            return self.environ.get(_text(env.group(3), env.group(4)), "")
        name = _NAME.fullmatch(body)
        if name is None:
            raise TemplateUnsupported(f"{{{{{body}}}}} is not evaluated")
        key = name.group(1)
        if key not in self.variables:
            return self.host_name if key == "inventory_hostname" else None
        value = self.variables[key]
        if value is None or isinstance(value, bool) or not isinstance(value, (str, int, float)):
            what = "null" if value is None else type(value).__name__
            raise TemplateUnsupported(f"{{{{ {key} }}}} is {what}, not text")
        if isinstance(value, str) and is_template(value):
            return self.evaluate(value, depth + 1)
        return str(value)


def _text(single: Optional[str], double: Optional[str]) -> str:
    return single if single is not None else (double or "")
