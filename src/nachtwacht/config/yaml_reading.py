"""YAML read as people write a config file: `end: 17:00` is a time of day, `id: no` is text.

PyYAML implements YAML 1.1, where an unquoted `17:00` is the base-60 number 1020 and `on`,
`off`, `yes`, `no` are booleans: `business_hours.end: 17:00` became 00:17 (and a traceback),
a contact `id: no` or a channel named `on:` became a boolean. YAML 1.2 reads all of these as
the text written, and so does this loader. Fields that are numbers or booleans lose nothing:
the schema turns "yes" into True and "1:30" into a refusal with the file and line.
"""

from __future__ import annotations

import re

import yaml

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

BOOL = "tag:yaml.org,2002:bool"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"

# YAML 1.1's patterns (yaml/resolver.py) without the base-60 forms; booleans only true/false
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+
    |[-+]?0[0-7_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""",
    re.X,
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class ConfigLoader(_Base):  # type: ignore[misc,valid-type]
    """The safe loader (libyaml's when present) with YAML 1.2's reading of plain scalars."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (BOOL, INT, FLOAT)]
        for first, resolvers in _Base.yaml_implicit_resolvers.items()
    }


ConfigLoader.add_implicit_resolver(BOOL, _BOOL, list("tTfF"))
ConfigLoader.add_implicit_resolver(INT, _INT, list("-+0123456789"))
ConfigLoader.add_implicit_resolver(FLOAT, _FLOAT, list("-+0123456789."))
