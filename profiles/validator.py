"""Profile validation: cardinality, fixed/pattern values, choice types, reference targets,
bindings, slicing and FHIRPath invariants, on top of the base R4 structure check that the REST
layer performs with fhir.resources.

Public entry point: ``validate(resource, profiles=..., strict_unknown_profile=...,
must_support=...)``.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from fhir_server.errors import FhirError, Issue
from fhir_server.paths import values_at
from profiles import fhirpath
from profiles.compiler import PRIMITIVES, CompiledProfile, Compiler, Node
from profiles.loader import ProfileRegistry, registry

log = logging.getLogger(__name__)

_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?$")


class _Ctx:
    """State of one validation run."""

    __slots__ = ("resource", "issues", "must_support", "reg", "env")

    def __init__(self, resource: dict[str, Any], reg: ProfileRegistry, must_support: bool):
        self.resource = resource
        self.issues: list[Issue] = []
        self.must_support = must_support
        self.reg = reg
        self.env: fhirpath.Env | None = None

    def add(self, severity: str, code: str, msg: str, expr: str) -> None:
        self.issues.append(Issue(severity, code, msg, [expr]))


def reference_type(ref: Any, resource: dict[str, Any] | None = None) -> str | None:
    """The resource type a Reference points to, when it can be told without resolving it."""
    if not isinstance(ref, dict):
        return None
    target = ref.get("reference")
    if isinstance(target, str):
        if target.startswith("#") and resource is not None:
            for c in resource.get("contained") or []:
                if isinstance(c, dict) and c.get("id") == target[1:]:
                    return c.get("resourceType")
            return None
        m = _REF.search(target)
        if m:
            return m.group(1)
    rtype = ref.get("type")
    if isinstance(rtype, str):
        return rtype.rsplit("/", 1)[-1]
    return None


# -- what invariants see of the outside world -------------------------------------------------
def _member_of(reg: ProfileRegistry):  # type: ignore[no-untyped-def]
    def member_of(value: Any, vs_url: str) -> bool | None:
        codings = _codings(value)
        if not codings:
            return None
        return any(reg.code_in_valueset(s, c, vs_url) is True for s, c in codings)
    return member_of


def _resolver(resource: dict[str, Any]):  # type: ignore[no-untyped-def]
    """resolve(): a contained resource, or a stub typed from the reference (enough for
    `resolve() is DocumentReference`)."""
    def resolve(ref: str) -> Any:
        if ref.startswith("#"):
            for c in resource.get("contained") or []:
                if isinstance(c, dict) and c.get("id") == ref[1:]:
                    return c
            return None
        rtype = reference_type({"reference": ref})
        return {"resourceType": rtype} if rtype else None
    return resolve


def _codings(value: Any) -> list[tuple[str | None, str]]:
    """(system, code) pairs of a CodeableConcept, Coding, Quantity or code value."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("coding"), list):
        return [(c.get("system"), c["code"]) for c in value["coding"]
                if isinstance(c, dict) and isinstance(c.get("code"), str)]
    if isinstance(value.get("code"), str):
        return [(value.get("system"), value["code"])]
    return []


# -- value comparison -------------------------------------------------------------------------
def _matches_pattern(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(_matches_pattern(v, value.get(k)) for k, v in pattern.items())
    if isinstance(pattern, list):
        if not isinstance(value, list):
            return False
        return all(any(_matches_pattern(p, v) for v in value) for p in pattern)
    return pattern == value


def _type_suffix(code: str) -> str:
    return code[0].upper() + code[1:]


class Validator:
    """Validates resources against the shipped profiles (thread-safe after construction)."""

    def __init__(self, reg: ProfileRegistry | None = None) -> None:
        self.reg = reg or registry()
        self.compiler = Compiler(self.reg)
        self._member_of = _member_of(self.reg)
        self._lock = threading.Lock()

    def compiled(self, url: str) -> CompiledProfile | None:
        """The compiled form of a shipped profile (compiled on first use)."""
        with self._lock:
            return self.compiler.get(url)

    def is_known(self, url: str) -> bool:
        sd = self.reg.get(url)
        return sd is not None and sd.get("kind") == "resource"

    def extension_issues(self, url: str, ext: dict[str, Any], expr: str,
                         holder: Any = None) -> list[Issue] | None:
        """Issues of an extension instance against a shipped extension definition (its
        value, sub-extensions and context); None when no shipped profile defines `url`."""
        sd = self.reg.get(url)
        if sd is None or sd.get("type") != "Extension":
            return None
        cp = self.compiled(url)
        if cp is None:
            return None
        ctx = _Ctx(ext, self.reg, False)
        ctx.env = fhirpath.Env(ext, ext, resolver=_resolver(ext), member_of=self._member_of)
        try:
            self._check_object(ctx, cp.root, ext, expr)
        except Exception as exc:  # noqa: BLE001 - never crash on odd input
            log.exception("validator failure on %s", url)
            ctx.add("error", "exception", f"Validation against {url} failed: {exc}", expr)
        contexts = [[c.get("type", "element"), c.get("expression", "")]
                    for c in sd.get("context") or []]
        if holder is not None and contexts and not holder.allows(contexts):
            allowed = ", ".join(e for _k, e in contexts)
            ctx.add("error", "structure", f"Extension {url} is not allowed here (allowed on: "
                    f"{allowed}; this element is a {holder.type})", expr)
        return ctx.issues

    def defines_sub_extension(self, parent_url: str, url: str) -> bool:
        """Whether the shipped extension `parent_url` declares the sub-extension `url` (an
        unknown parent: true, its sub-extensions cannot be judged)."""
        sd = self.reg.get(parent_url)
        if sd is None:
            return True
        for el in sd.get("differential", {}).get("element", []):
            if el.get("path") == "Extension.extension.url" and el.get("fixedUri") == url:
                return True
        return False

    def validate(self, resource: Any, *, profiles: list[str] | None = None,
                 strict_unknown_profile: bool = False, must_support: bool = False) -> list[Issue]:
        """Validate ``resource`` against the profiles it claims in ``meta.profile`` and those in
        ``profiles``.  An unknown profile in ``profiles`` raises FhirError(400); an unknown
        claimed profile gives a warning (an error when ``strict_unknown_profile``)."""
        for url in profiles or []:
            if not self.is_known(url):
                raise FhirError(400, "not-supported",
                                f"Profile {url!r} is not known to this server", "profile")
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return [Issue("error", "structure", "Not a FHIR resource (no resourceType)", [])]
        rtype = resource["resourceType"]
        issues: list[Issue] = []
        claimed: list[str] = []
        meta = resource.get("meta")
        raw_claims = meta.get("profile") if isinstance(meta, dict) else None
        if isinstance(raw_claims, list):
            for i, url in enumerate(raw_claims):
                if not isinstance(url, str):
                    continue
                if self.is_known(url):
                    claimed.append(url.partition("|")[0])
                else:
                    sev = "error" if strict_unknown_profile else "warning"
                    issues.append(Issue(sev, "not-supported",
                                        f"Profile {url} is not known to this server; the "
                                        "resource was not validated against it",
                                        [f"{rtype}.meta.profile[{i}]"]))
        wanted = list(dict.fromkeys(claimed + [p.partition("|")[0] for p in profiles or []]))
        for url in wanted:
            cp = self.compiled(url)
            if cp is None:
                continue
            if cp.type != rtype:
                issues.append(Issue("error", "structure",
                                    f"Profile {url} is for {cp.type}, not {rtype}", [rtype]))
                continue
            ctx = _Ctx(resource, self.reg, must_support)
            ctx.env = fhirpath.Env(resource, resource, resolver=_resolver(resource),
                                   member_of=self._member_of)
            try:
                self._check_object(ctx, cp.root, resource, rtype)
            except Exception as exc:  # noqa: BLE001 - never crash on odd input
                log.exception("validator failure on %s", url)
                ctx.add("error", "exception", f"Validation against {url} failed: {exc}", rtype)
            for issue in ctx.issues:
                issue.diagnostics = f"{issue.diagnostics} (profile {cp.url.rsplit('/', 1)[-1]})"
            issues.extend(ctx.issues)
        return _dedupe(issues)

    # -- walking ------------------------------------------------------------------------------
    def _check_object(self, ctx: _Ctx, node: Node, obj: Any, expr: str) -> None:
        """Check the children and invariants of one instance of ``node``."""
        if isinstance(obj, dict):
            for child in node.children.values():
                self._check_element(ctx, child, obj, expr)
        for c in node.constraints:
            self._check_constraint(ctx, c, obj, expr)

    def _values(self, node: Node, obj: dict[str, Any], expr: str
                ) -> list[tuple[Any, str, str | None, Any]]:
        """(value, expression, choice type, primitive extension object) per occurrence."""
        out: list[tuple[Any, str, str | None, Any]] = []
        if node.is_choice:
            for key, t in node.choice_keys:
                if key in obj or "_" + key in obj:
                    out.append((obj.get(key), f"{expr}.{node.stem}.ofType({t})", t,
                                obj.get("_" + key)))
            return out
        val = obj.get(node.name)
        ext = obj.get("_" + node.name)
        if val is None and ext is None:
            return out
        if node.is_array:
            items = val if isinstance(val, list) else [val] if val is not None else []
            exts = ext if isinstance(ext, list) else []
            for i in range(max(len(items), len(exts))):
                item = items[i] if i < len(items) else None
                e = exts[i] if i < len(exts) else None
                if item is None and not e:
                    continue
                out.append((item, f"{expr}.{node.name}[{i}]", None, e))
        else:
            out.append((val, f"{expr}.{node.name}", None, ext))
        return out

    def _check_element(self, ctx: _Ctx, node: Node, obj: dict[str, Any], expr: str) -> None:
        values = self._values(node, obj, expr)
        where = f"{expr}.{node.stem}"
        if len(values) < node.min:
            ctx.add("error", "required",
                    f"{node.path} requires at least {node.min} value(s); found {len(values)}",
                    where)
        elif node.max is not None and len(values) > node.max:
            ctx.add("error", "structure",
                    f"{node.path} allows at most {node.max} value(s); found {len(values)}",
                    where if node.max == 0 or len(values) <= 1 else values[node.max][1])
        if not values:
            if ctx.must_support and node.must_support:
                ctx.add("information", "informational",
                        f"Must Support element {node.path} is absent", where)
            if any(s.min > 0 for s in node.slices):
                self._check_slices(ctx, node, values, where)
            return
        for val, vexpr, vtype, ext in values:
            self._check_value(ctx, node, val, vexpr, vtype, ext)
        if node.slices:
            self._check_slices(ctx, node, values, where)

    def _check_value(self, ctx: _Ctx, node: Node, val: Any, expr: str, vtype: str | None,
                     ext: Any) -> None:
        if vtype is not None:
            if node.types is not None and vtype not in node.types:
                ctx.add("error", "structure",
                        f"{node.path}: type {vtype} is not allowed here (allowed: "
                        f"{', '.join(node.types)})", expr)
                return
            ts = node.type_slices.get(_type_suffix(vtype))
            if ts is not None:
                self._check_single(ctx, ts, val, expr, vtype, ext)
        self._check_single(ctx, node, val, expr, vtype, ext)

    def _check_single(self, ctx: _Ctx, node: Node, val: Any, expr: str,
                      vtype: str | None, ext: Any) -> None:
        """Rules of one node applied to one value."""
        if node.has_fixed and val != node.fixed:
            ctx.add("error", "value",
                    f"{node.path} must be exactly {_show(node.fixed)}; found {_show(val)}", expr)
        if node.has_pattern and not _matches_pattern(node.pattern, val):
            ctx.add("error", "value",
                    f"{node.path} must match {_show(node.pattern)}; found {_show(val)}", expr)
        if node.binding is not None and val is not None:
            self._check_binding(ctx, node, val, expr)
        if node.targets is not None and isinstance(val, dict):
            rtype = reference_type(val, ctx.resource)
            if rtype and rtype not in node.targets and "Resource" not in node.targets:
                ctx.add("error", "structure",
                        f"{node.path}: a reference to {rtype} is not allowed (allowed: "
                        f"{', '.join(dict.fromkeys(node.targets))})", expr)
        if node.ext_profile and isinstance(val, dict):
            ext = self.compiled(node.ext_profile)
            if ext is not None:
                self._check_object(ctx, ext.root, val, expr)
        if node.children or node.constraints:
            if node.is_primitive or vtype in PRIMITIVES:
                # children of a primitive (id, extension) sit in the "_name" object
                self._check_object(ctx, node, ext if isinstance(ext, dict) else {}, expr)
                return
            if val is not None and not isinstance(val, dict):
                ctx.add("error", "structure", f"{node.path} must be an object", expr)
                return
            self._check_object(ctx, node, val if val is not None else {}, expr)

    def _check_binding(self, ctx: _Ctx, node: Node, val: Any, expr: str) -> None:
        strength, vs = node.binding  # type: ignore[misc]
        if strength not in ("required", "extensible", "preferred"):
            return
        if not self.reg.has_valueset(vs):
            return
        codings = _codings(val)
        if not codings:
            if strength == "required" and isinstance(val, dict) and "coding" not in val and \
                    ("text" in val or not val):
                ctx.add("error", "code-invalid",
                        f"{node.path}: a code from {vs} is required", expr)
            return
        results = [self.reg.code_in_valueset(s, c, vs) for s, c in codings]
        if any(r is True for r in results) or any(r is None for r in results):
            return
        shown = ", ".join(f"{s}#{c}" if s else c for s, c in codings)
        if strength == "required":
            ctx.add("error", "code-invalid",
                    f"{node.path}: {shown} is not in the required value set {vs}", expr)
        else:
            ctx.add("warning", "code-invalid",
                    f"{node.path}: {shown} is not in the {strength} value set {vs}", expr)

    def _check_constraint(self, ctx: _Ctx, c: Any, obj: Any, expr: str) -> None:
        if c.compiled is None:
            return
        try:
            result = c.compiled.evaluate(obj, ctx.env)
        except Exception as exc:  # noqa: BLE001
            ctx.add("warning", "invariant",
                    f"Invariant {c.key} could not be evaluated: {exc}", expr)
            return
        if not fhirpath.holds(result):
            sev = "error" if c.severity == "error" else "warning"
            ctx.add(sev, "invariant", f"Constraint failed: {c.key}: {c.human}", expr)

    # -- slicing ------------------------------------------------------------------------------
    def _check_slices(self, ctx: _Ctx, node: Node,
                      values: list[tuple[Any, str, str | None, Any]], where: str) -> None:
        counts = {s.slice_name: 0 for s in node.slices}
        for val, vexpr, vtype, ext in values:
            matched = None
            for s in node.slices:
                if self._in_slice(ctx, node, s, val):
                    matched = s
                    break
            if matched is None:
                if node.slicing_rules == "closed":
                    ctx.add("error", "structure",
                            f"{node.path}: this element matches none of the slices "
                            f"({', '.join(str(k) for k in counts)}) and the slicing is closed",
                            vexpr)
                continue
            counts[matched.slice_name] += 1
            self._check_value(ctx, matched, val, vexpr, vtype, ext)
        for s in node.slices:
            n = counts[s.slice_name]
            if n < s.min:
                ctx.add("error", "required",
                        f"{node.path}: slice {s.slice_name} requires at least {s.min} "
                        f"element(s); found {n}", where)
            elif s.max is not None and n > s.max:
                ctx.add("error", "structure",
                        f"{node.path}: slice {s.slice_name} allows at most {s.max} "
                        f"element(s); found {n}", where)

    def _in_slice(self, ctx: _Ctx, holder: Node, s: Node, val: Any) -> bool:
        if not holder.discriminators:
            return False
        for dtype, dpath in holder.discriminators:
            if not self._disc_match(ctx, s, dtype, dpath, val):
                return False
        return True

    def _disc_match(self, ctx: _Ctx, s: Node, dtype: str, dpath: str, val: Any) -> bool:
        if dtype == "profile":
            targets = s.targets or []
            return reference_type(val, ctx.resource) in targets
        if dtype == "exists":
            m = re.match(r"^extension\('([^']+)'\)$", dpath)
            if m and isinstance(val, dict):
                return any(isinstance(e, dict) and e.get("url") == m.group(1)
                           for e in val.get("extension") or [])
            return values_at(val, dpath) != []
        if dtype == "type":
            sub = s if dpath == "$this" else s.children.get(dpath + "[x]") or \
                s.children.get(dpath)
            if sub is None:
                return False
            if not isinstance(val, dict):
                return False
            present = [t for key, t in sub.choice_keys if key in val]
            return bool(present) and all(t in sub.allowed_types for t in present)
        # value / pattern
        expected, has = _expected_at(s, dpath)
        actual = values_at(val, dpath)
        if has:
            if isinstance(expected, list):  # e.g. CodeableConcept.coding derived from a pattern
                return _matches_pattern(expected, actual)
            return any(_matches_pattern(expected, a) for a in actual)
        target = _node_at(s, dpath)
        if target is not None and target.binding and target.binding[0] == "required":
            for a in actual:
                for sys_, code in _codings(a):
                    if self.reg.code_in_valueset(sys_, code, target.binding[1]) is True:
                        return True
        return False


def _node_at(s: Node, dpath: str) -> Node | None:
    if dpath == "$this":
        return s
    cur: Node | None = s
    for part in dpath.split("."):
        if cur is None:
            return None
        cur = cur.children.get(part)
    return cur


def _expected_at(s: Node, dpath: str) -> tuple[Any, bool]:
    """The fixed/pattern value a slice requires at a discriminator path."""
    target = _node_at(s, dpath)
    if target is not None:
        if target.has_fixed:
            return target.fixed, True
        if target.has_pattern:
            return target.pattern, True
    if dpath != "$this" and (s.has_pattern or s.has_fixed):  # derive from the slice's pattern
        value = s.pattern if s.has_pattern else s.fixed
        for part in dpath.split("."):
            if not isinstance(value, dict) or part not in value:
                return None, False
            value = value[part]
        return value, True
    return None, False


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 160 else text[:157] + "..."


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    out = []
    for i in issues:
        key = (i.severity, i.code, tuple(i.expression))
        base = i.diagnostics.rsplit(" (profile ", 1)[0]
        k2 = (*key[:2], (*key[2], base))
        if k2 in seen:
            continue
        seen.add(k2)
        out.append(i)
    return out


_VALIDATOR: Validator | None = None
_VLOCK = threading.Lock()


def default_validator() -> Validator:
    """The process-wide validator over the shipped registry."""
    global _VALIDATOR
    if _VALIDATOR is None:
        with _VLOCK:
            if _VALIDATOR is None:
                _VALIDATOR = Validator()
    return _VALIDATOR


def validate(resource: dict[str, Any], *, profiles: list[str] | None = None,
             strict_unknown_profile: bool = False, must_support: bool = False) -> list[Issue]:
    """Validate a resource against its claimed profiles plus ``profiles``; return the issues.

    Raises FhirError(400) when ``profiles`` names a profile this server does not know."""
    return default_validator().validate(resource, profiles=profiles,
                                        strict_unknown_profile=strict_unknown_profile,
                                        must_support=must_support)
