"""S6: a digest, signature, MAC, token or secret is compared only with ``hmac.compare_digest``
(or ``secrets.compare_digest``), never with ``==``, ``!=``, ``in`` or ``not in``, whose time
depends on how many leading bytes match.

The check is an AST scan of the shipped code. An operand counts as secret when

- its name (a variable, attribute or subscripted container) has a word that says so
  (``digest``, ``signature``, ``mac``, ``token``, ``secret``, ``hash``, ``password`` ...,
  words split on ``_`` and case, a plural ``s`` dropped), or
- it is a call of ``.digest()``, ``.hexdigest()``, ``hmac.new(...)`` / ``hmac.digest(...)``, or
  of a function of the same module whose ``return`` makes one of those (``_chain``,
  ``anchor_mac``), or
- it is a local variable assigned from such a call in the same function.

A comparison with a literal (``token == ""``), or with a module constant bound to literals (a
set of field names), tells nothing about a secret and is not a finding; ``is`` never compares
contents.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("gateway", "actors", "contracts", "sim")
SECRET_WORDS = frozenset({"digest", "hexdigest", "signature", "mac", "hmac", "token", "secret",
                          "hash", "password", "passwd", "apikey", "nonce"})
_DIGEST_CALLS = frozenset({"digest", "hexdigest"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def _words(name: str) -> set[str]:
    out = set()
    for part in name.split("_"):
        for w in _WORD.findall(part):
            w = w.lower()
            out.add(w[:-1] if w.endswith("s") and w[:-1] in SECRET_WORDS else w)
    return out


def _name_of(node: ast.expr) -> str | None:
    """The identifier that names a value: ``x``, ``a.b.x``, ``x[i]``, ``x.get(k)`` → ``x``."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return node.attr
        if isinstance(node, ast.Subscript):
            node = node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "get"):
            node = node.func.value
        else:
            return None


def _makes_digest(node: ast.AST, digest_funcs: set[str]) -> bool:
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Call):
            continue
        f = sub.func
        if isinstance(f, ast.Attribute) and f.attr in _DIGEST_CALLS:
            return True
        if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                and f.value.id == "hmac" and f.attr in ("new", "digest")):
            return True
        if isinstance(f, ast.Name) and f.id in digest_funcs:
            return True
    return False


def _digest_functions(tree: ast.Module) -> set[str]:
    """Functions of the module that return a digest (to a fixpoint: a function returning
    another's digest is one too)."""
    returns: dict[str, list[ast.expr]] = {}
    for f in ast.walk(tree):
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef):
            returns.setdefault(f.name, []).extend(
                r.value for r in ast.walk(f) if isinstance(r, ast.Return) and r.value)
    found: set[str] = set()
    while more := {name for name, values in returns.items() if name not in found
                   and any(_makes_digest(v, found) for v in values)}:
        found |= more
    return found


def _literal_constants(tree: ast.Module) -> set[str]:
    """Module names bound to a literal or a set/tuple/list of literals (field names, public
    demo values): comparing with one tells nothing about a secret."""
    out = set()
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        if not isinstance(target, ast.Name) or value is None:
            continue
        if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id in ("frozenset", "set", "tuple") and len(value.args) == 1):
            value = value.args[0]
        try:
            ast.literal_eval(value)
        except ValueError:
            continue
        out.add(target.id)
    return out


class _Scan(ast.NodeVisitor):
    def __init__(self, digest_funcs: set[str], constants: set[str]) -> None:
        self.digest_funcs = digest_funcs
        self.constants = constants
        self.tainted: list[set[str]] = [set()]
        self.findings: list[tuple[int, str]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        local = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assign | ast.AnnAssign) and sub.value is not None \
                    and _makes_digest(sub.value, self.digest_funcs):
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                local |= {t.id for t in targets if isinstance(t, ast.Name)}
        self.tainted.append(local)
        self.generic_visit(node)
        self.tainted.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def _secret(self, node: ast.expr) -> bool:
        if _makes_digest(node, self.digest_funcs):
            return True
        name = _name_of(node)
        if name is None:
            return False
        return name in self.tainted[-1] or bool(_words(name) & SECRET_WORDS)

    def _public(self, node: ast.expr) -> bool:
        return isinstance(node, ast.Constant) or (isinstance(node, ast.Name)
                                                  and node.id in self.constants)

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands, operands[1:], strict=False):
            if not isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn):
                continue
            if self._public(left) or self._public(right):
                continue
            if self._secret(left) or self._secret(right):
                self.findings.append((node.lineno, ast.unparse(node)))
        self.generic_visit(node)


def findings_in(source: str) -> list[tuple[int, str]]:
    """``(line, comparison)`` of every secret compared in variable time in ``source``."""
    tree = ast.parse(source)
    scan = _Scan(_digest_functions(tree), _literal_constants(tree))
    scan.visit(tree)
    return scan.findings


def _shipped() -> Iterator[Path]:
    for top in SCANNED:
        yield from sorted((ROOT / top).rglob("*.py"))


def test_no_secret_is_compared_in_variable_time() -> None:
    found = [f"{path.relative_to(ROOT)}:{line}: {text}" for path in _shipped()
             for line, text in findings_in(path.read_text())]
    assert found == []


PLANTED = textwrap.dedent('''
    import hashlib
    import hmac

    def _sign(secret: bytes, body: bytes) -> str:
        return hmac.new(secret, body, hashlib.sha256).hexdigest()

    def verify(secret: bytes, body: bytes, given: str) -> bool:
        return _sign(secret, body) == given                               # 7: a digest function

    def verify_mac(key: bytes, body: bytes, header: str) -> bool:
        expected = hmac.new(key, body, hashlib.sha256).hexdigest()
        return header != expected                                         # 11: a tainted local

    def bearer(token: str, allowed: set[str]) -> bool:
        return token in allowed                                           # 14: a token name

    def anchor(a, key) -> bool:
        return a.mac == hashlib.sha256(key).digest()                      # 17: .digest()

    def row(rows, h) -> bool:
        return rows[0].prev_hash != h                                     # 20: a hash name

    def fine(token: str, a, b) -> bool:
        if token == "" or token is None:                                  # a literal
            return False
        return hmac.compare_digest(token, "x") and a == b                 # no secret
''')


def test_the_checker_finds_each_planted_comparison() -> None:
    """The scan fails on each kind of variable-time compare it claims to catch, and passes the
    constant-time and non-secret ones."""
    assert [line for line, _ in findings_in(PLANTED)] == [9, 13, 16, 19, 22]
