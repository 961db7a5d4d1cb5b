"""A small model of the parsed Bicep files (pycep-parser) for the structural tests.

pycep-parser turns a ``.bicep`` file into nested dicts. References to symbols come back as
``BicepElement`` (a ``str`` subclass) while string literals are plain ``str``; references inside
string interpolations (``'${name}'``) stay inside the string and are found with a regex here.
pycep's arithmetic precedence is not Bicep's (``a * b + c`` parses as ``a * (b + c)``), so the
templates parenthesise arithmetic and :func:`evaluate` only follows what the parser built.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser
from pycep.transformer import BicepElement

ROOT = Path(__file__).resolve().parents[2]
BICEP_DIR = ROOT / "infra" / "bicep"
MAIN = BICEP_DIR / "main.bicep"

_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_STRING_LITERAL = re.compile(r"'[^']*'")
#: identifiers at the start of an expression path (not after '.', not function names)
_IDENTIFIER = re.compile(r"(?<![.\w])([A-Za-z_]\w*)(?!\w*\s*\()")
_MODULE_OUTPUT = re.compile(r"(?<![.\w])([A-Za-z_]\w*)\.outputs\.([A-Za-z_]\w*)")
_KEYWORDS = {"true", "false", "null"}


def bicep_files() -> list[Path]:
    return sorted(BICEP_DIR.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Any]:
    """The pycep document of one file (cached: parsing takes a few hundred milliseconds)."""
    return BicepParser().parse(file_path=path)  # type: ignore[no-any-return]


@dataclass
class Reference:
    name: str
    #: for ``<module>.outputs.<name>``: the output name
    output: str | None = None


@dataclass
class BicepFile:
    path: Path
    doc: dict[str, Any] = field(repr=False)

    @classmethod
    def load(cls, path: Path) -> BicepFile:
        return cls(path, parse(path))

    @property
    def params(self) -> dict[str, Any]:
        return self.doc.get("parameters", {})  # type: ignore[no-any-return]

    @property
    def variables(self) -> dict[str, Any]:
        return self.doc.get("variables", {})  # type: ignore[no-any-return]

    @property
    def resources(self) -> dict[str, Any]:
        return self.doc.get("resources", {})  # type: ignore[no-any-return]

    @property
    def modules(self) -> dict[str, Any]:
        return self.doc.get("modules", {})  # type: ignore[no-any-return]

    @property
    def outputs(self) -> dict[str, Any]:
        return self.doc.get("outputs", {})  # type: ignore[no-any-return]

    def declared(self) -> set[str]:
        return set(self.params) | set(self.variables) | set(self.resources) | set(self.modules)

    def required_params(self) -> set[str]:
        return {name for name, spec in self.params.items() if spec.get("default") is None}

    def secure_params(self) -> set[str]:
        return {
            name
            for name, spec in self.params.items()
            if any(d.get("type") == "secure" for d in spec.get("decorators", []))
        }

    def module_path(self, module: str) -> Path:
        return (self.path.parent / self.modules[module]["detail"]["path"]).resolve()

    def resource_body(self, name: str) -> dict[str, Any]:
        """The resource's properties object, whether it is conditional, a loop, or plain."""
        config: dict[str, Any] = self.resources[name]["config"]
        while "config" in config and ("condition" in config or "loop_type" in config):
            config = config["config"]
        return config

    def module_body(self, name: str) -> dict[str, Any]:
        config: dict[str, Any] = self.modules[name]["config"]
        while "config" in config and ("condition" in config or "loop_type" in config):
            config = config["config"]
        return config

    def elements(self) -> Iterator[tuple[str, Any]]:
        """(where, value) for every place an expression may reference a symbol."""
        for name, spec in self.params.items():
            yield f"param {name}", spec.get("default")
        for name, spec in self.variables.items():
            yield f"var {name}", spec.get("value")
        for name, spec in self.resources.items():
            yield f"resource {name}", spec.get("config")
        for name, spec in self.modules.items():
            yield f"module {name}", spec.get("config")
        for name, spec in self.outputs.items():
            yield f"output {name}", spec.get("value")


def loop_names(node: Any) -> set[str]:
    """Item and index names bound by ``for`` loops anywhere under ``node``."""
    names: set[str] = set()
    if isinstance(node, Mapping):
        loop = node.get("loop_type")
        if isinstance(loop, Mapping):
            detail = loop.get("detail", {})
            for key in ("item_name", "index_name"):
                if detail.get(key):
                    names.add(str(detail[key]))
        for value in node.values():
            names |= loop_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= loop_names(value)
    return names


def _interpolation_references(text: str) -> Iterator[Reference]:
    for expression in _INTERPOLATION.findall(text):
        bare = _STRING_LITERAL.sub("''", expression)
        outputs = {(m.group(1), m.group(2)) for m in _MODULE_OUTPUT.finditer(bare)}
        for base, output in outputs:
            yield Reference(base, output)
        for match in _IDENTIFIER.finditer(bare):
            if match.group(1) not in _KEYWORDS:
                yield Reference(match.group(1))


def _accessor_chain(node: Any) -> list[Any]:
    """``a.b.c`` (pycep nests it to the right: a . (b . c)) as [a, 'b', 'c']."""
    chain: list[Any] = []
    while isinstance(node, Mapping) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        chain.append(operands["operand_1"])
        node = operands["operand_2"]
    chain.append(node)
    return chain


def references(node: Any) -> Iterator[Reference]:
    """Every symbol an expression refers to (object keys and property names excluded)."""
    if isinstance(node, BicepElement):
        yield Reference(str(node))
    elif isinstance(node, str):
        yield from _interpolation_references(node)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)
    elif isinstance(node, Mapping):
        operator = node.get("operator")
        if isinstance(operator, Mapping) and operator.get("type") == "property_accessor":
            chain = _accessor_chain(node)
            base = chain[0]
            if isinstance(base, BicepElement):
                output = None
                if len(chain) >= 3 and str(chain[1]) == "outputs":
                    output = str(chain[2])
                yield Reference(str(base), output)
            else:
                yield from references(base)
            return
        if isinstance(operator, Mapping) and operator.get("type") == "nested_resource_accessor":
            yield from references(operator["operands"]["operand_1"])
            return
        if isinstance(operator, Mapping):
            yield from references(operator.get("operands"))
            return
        function = node.get("function")
        if isinstance(function, Mapping):
            yield from references(function.get("parameters"))
            # e.g. tenant().tenantId: the property after a function call is not a symbol
            return
        for key, value in node.items():
            if key in ("loop_type",):
                detail = value.get("detail", {}) if isinstance(value, Mapping) else {}
                for array_key in ("array_name", "object_name"):
                    if array_key in detail:
                        yield from references(detail[array_key])
                continue
            if isinstance(key, str) and "${" in key:
                yield from _interpolation_references(key)
            yield from references(value)


def literal(node: Any) -> str | int | bool | None:
    """The value of a literal (plain string without interpolation, int, bool), else None."""
    if isinstance(node, BicepElement):
        return None
    if isinstance(node, str):
        return None if "${" in node else node
    if isinstance(node, bool | int):
        return node
    return None


def evaluate(node: Any, scope: Mapping[str, Any], file: BicepFile) -> int:
    """Integer arithmetic over parameters and variables (``scope`` overrides parameter defaults)."""
    if isinstance(node, bool):
        raise TypeError("not an integer expression")
    if isinstance(node, int):
        return node
    if isinstance(node, BicepElement):
        name = str(node)
        if name in scope:
            return int(scope[name])
        if name in file.variables:
            return evaluate(file.variables[name]["value"], scope, file)
        return evaluate(file.params[name]["default"], scope, file)
    if isinstance(node, Mapping) and "operator" in node:
        kind = node["operator"]["type"]
        operands = node["operator"]["operands"]
        left = evaluate(operands["operand_1"], scope, file)
        right = evaluate(operands["operand_2"], scope, file)
        if kind == "add":
            return left + right
        if kind == "substract":  # sic: pycep's name
            return left - right
        if kind == "multiply":
            return left * right
        raise ValueError(f"unsupported operator {kind}")
    if isinstance(node, Mapping) and "function" in node:
        kind = node["function"]["type"]
        args = [evaluate(v, scope, file) for v in node["function"]["parameters"].values() if v is not None]
        if kind == "min":
            return min(args)
        if kind == "max":
            return max(args)
        raise ValueError(f"unsupported function {kind}")
    raise ValueError(f"not an integer expression: {node!r}")


def decorator(spec: Mapping[str, Any], kind: str) -> Any:
    for item in spec.get("decorators", []):
        if item.get("type") == kind:
            return item.get("argument")
    return None
