#!/usr/bin/env python3
"""Mutation testing of the lines marked ``# SECURITY:``.

A ``# SECURITY:`` comment marks a line that exists to stop an attack: the comment's own line when
it trails code, else the statement that follows the comment block. For each such statement this
script makes a few one-line mutants, the edits a slip or a bad refactoring would make:

- a comparison turned around (``==``/``!=``, ``in``/``not in``, ``is``/``is not``, ``<``/``<=``);
- one operand of ``and``/``or`` dropped, or ``and`` swapped for ``or``; a ``not`` removed;
- an ``if`` guarding a ``raise`` or a ``return`` made ``if False`` (the check removed), a
  ``raise`` made ``pass``;
- a call statement removed; a sanitising call unwrapped (``f(x)`` → ``x``); a timeout removed
  (``asyncio.wait_for(x, t)`` → ``x``);
- ``hmac.compare_digest(a, b)`` made ``a == b`` or the substring test ``b in a``;
- an element dropped from a set or tuple literal, an anchor or bound dropped from a regex;
- a conditional expression reduced to one branch, a comprehension's filter dropped;
- a dict entry or keyword argument removed (the default applies instead).

Each mutant is written into a private copy of the working tree (never into the tree itself,
which others may be editing), and the test suite is run against it with ``-x``: first the tests
mapped to the mutated module, then (unless ``--mapped-only``) the rest of the suite. A mutant is
*killed* when a test fails (or the run times out), and *survives* when every test passes. A
survivor is either a missing test or an equivalent mutant; equivalent ones are listed in
``EQUIVALENT`` below, each with the reason, and are reported but not counted against the score.

    .venv/bin/python tools/mutate_security.py                   # every SECURITY line
    .venv/bin/python tools/mutate_security.py --changed origin/main   # lines touched since REV
    .venv/bin/python tools/mutate_security.py --list            # the mutants, without running
    .venv/bin/python tools/mutate_security.py --file gateway/admin.py --mapped-only

Tests that already fail on the unmutated copy (the tree is shared and moves) are listed and
excluded, up to ``--max-baseline-failures``. Exit status: 0 when no unexplained mutant survives,
1 otherwise, 2 when the unmutated copy cannot be tested.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import difflib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "SECURITY:"

# Tests that reach a module only through HTTP (so its name does not appear in them). A mutant is
# run against these first, then against test files named after the module, naming it or in its
# package's test directory, then tests/security.
MAPPED: dict[str, list[str]] = {
    "gateway/admin.py": [
        "tests/functional/test_admin_api.py",
        "tests/functional/test_processes.py",
    ],
    "gateway/app.py": ["tests/security/test_faults.py"],
    "gateway/authn/registry.py": ["tests/authn/test_registry_refusals.py"],
    "gateway/authn/gateway_token.py": [
        "tests/authn/test_gateway_token_markers.py",
        "tests/functional/test_tokens.py",
    ],
    "gateway/authn/jwks.py": ["tests/functional/test_team_sessions.py"],
    "gateway/authn/member_token.py": [
        "tests/functional/test_member_token_probing.py",
        "tests/functional/test_member_tokens.py",
    ],
    "gateway/authn/team_session.py": [
        "tests/functional/test_team_session_algorithms.py",
        "tests/functional/test_team_sessions.py",
    ],
    "gateway/authz/authorize.py": [
        "tests/authz/test_policy.py",
        "tests/functional/test_tokens.py",
        "tests/functional/test_member_tokens.py",
    ],
    "gateway/authz/paths.py": ["tests/authz/test_paths.py", "tests/functional/test_proxy.py"],
    "gateway/authz/relationships.py": [
        "tests/functional/test_relationships.py",
        "tests/functional/test_member_tokens.py",
    ],
    "gateway/config/base.py": ["tests/test_config.py"],
    "gateway/config/cors.py": ["tests/functional/test_cors.py"],
    "gateway/config/upstreams.py": ["tests/functional/test_proxy.py"],
    "gateway/credentials.py": ["tests/test_credentials.py", "tests/functional/test_api_keys.py"],
    "gateway/decision_server.py": [
        "tests/test_decision_server.py",
        "tests/test_decision_server_at_once.py",
        "tests/functional/test_decision.py",
        "tests/security/test_edge_hygiene.py",
    ],
    "gateway/demo/lines.py": ["tests/functional/test_demo.py"],
    "gateway/forward/decision.py": [
        "tests/functional/test_decision.py",
        "tests/authn/test_consumed_on_initialize.py",
    ],
    "gateway/pipeline.py": [
        "tests/test_decision_server_at_once.py",
        "tests/authn/test_consumed_on_initialize.py",
        "tests/authz/test_decisions.py",
        "tests/functional/test_decision.py",
    ],
    "gateway/forward/headers.py": [
        "tests/forward/test_headers.py",
        "tests/functional/test_request_ids.py",
        "tests/functional/test_proxy.py",
    ],
    "gateway/forward/proxy.py": ["tests/security/test_faults.py", "tests/functional/test_proxy.py"],
    "gateway/forward/connection.py": [
        "tests/forward/test_upstream.py",
        "tests/functional/test_proxy_faults.py",
    ],
    "gateway/forward/upstream.py": ["tests/forward/test_upstream.py"],
    "gateway/issue/endpoints.py": [
        "tests/functional/test_token_issuance.py",
        "tests/functional/test_tokens.py",
    ],
    "gateway/keys/service.py": ["tests/keys/test_service.py", "tests/security/test_timing.py"],
    "gateway/keys/signing.py": ["tests/security/test_jwt_attacks.py"],
    "gateway/front.py": ["tests/observe/test_metrics.py", "tests/observe/test_logs.py"],
    "gateway/observe/metrics.py": ["tests/observe/test_metrics.py"],
    "gateway/protocol.py": ["tests/security/test_edge_hygiene.py"],
    "gateway/render.py": ["tests/test_render.py", "tests/functional/test_challenges.py"],
    "gateway/runtime.py": ["tests/functional/test_proxy.py", "tests/functional/test_decision.py"],
    "gateway/wire.py": ["tests/test_wire.py", "tests/test_decision_server.py"],
    "gateway/stores/multiplex.py": [
        "tests/stores/test_multiplex.py",
        "tests/security/test_faults.py",
    ],
}

# Mutants that cannot change what any client, backend or operator observes. Keyed by
# (file, the mutated line as printed by --list); the value says why it is equivalent.
_TOKEN = "gateway/authn/gateway_token.py"
_REFUSED = "the token is refused with 401 invalid_token all the same (details.reason 'claims')"
_SERVER_FAULT = (
    "GatewayRequestHandler.handle_error sees a 5xx, or no exception, only for an exception no "
    "handler caught: the public app answers every exception itself (gateway.front) and the "
    "admin handlers every GatewayError, so no request takes that branch; its parser refusals "
    "(4xx, with their exception) are logged as before"
)
EQUIVALENT: dict[tuple[str, str], str] = {
    ("gateway/decision_server.py", "if (len(pending) > MAX_QUEUED):"): (
        "the bound on answers given at once and not yet written becomes 33 instead of 32: "
        "still a constant per connection, one answer (a few hundred bytes) more, which no "
        "client can grow"
    ),
    ("gateway/stores/multiplex.py", "if (deadline < loop.time()):"): (
        "the timer fires at the deadline or after it; at exactly the deadline the strict test "
        "sets the timer again for that same moment, which has then passed: the next run fails "
        "the command, a loop iteration later"
    ),
    (
        "gateway/identifiers.py",
        "_IDENTIFIER = (re.compile('[A-Za-z0-9][A-Za-z0-9_-]{0,127}\\\\Z'))",
    ): ("_IDENTIFIER is only used with .fullmatch(), which anchors at both ends"),
    ("gateway/identifiers.py", "_IDENTIFIER = (re.compile('^[A-Za-z0-9][A-Za-z0-9_-]{0,127}'))"): (
        "_IDENTIFIER is only used with .fullmatch(), which anchors at both ends (a trailing "
        "newline fails it too)"
    ),
    (
        "gateway/credentials.py",
        "JWS_SHAPE = (re.compile('[A-Za-z0-9_-]{2,}\\\\.[A-Za-z0-9_-]{2,}"
        "\\\\.[A-Za-z0-9_-]{2,}\\\\Z'))",
    ): "JWS_SHAPE is only used with .match(), which anchors at the start already",
    (
        "gateway/keys/fingerprint.py",
        "if not (recorded.encode() == sealer.fingerprint.encode()):",
    ): (
        "the same verdict; a fingerprint is not a secret (the comment says so), so the time a "
        "plain comparison takes tells nothing"
    ),
    (
        "gateway/keys/watch.py",
        "if recorded is not None and (recorded.encode() == sealer.fingerprint.encode()):",
    ): "as in gateway/keys/fingerprint.py above: the same verdict on a fingerprint, no secret",
    ("gateway/keys/signing.py", "return (self._by_kid.get(kid))"): (
        "a token whose kid is not a string never gets here: PyJWT refuses its header when the "
        "credential is classified (401 malformed, test_a_kid_that_is_not_a_string_is_malformed)"
    ),
    ("gateway/issue/endpoints.py", "if (principal.credential is not api_key.KIND):"): (
        "every API-key principal carries its key id (ApiKeyAuthenticator sets key_id from the "
        "record); the second operand only narrows the type for mypy"
    ),
    **{
        ("gateway/protocol.py", after): _SERVER_FAULT
        for after in (
            "('request refused by the HTTP parser'),",
            "(logging.INFO),",
            "if (error.status <= 500)",
            "logging.INFO if (error.status <= 500) else logging.ERROR,",
            "exc_type=(type(exc).__name__),",
            "reason=(_first_line(exc)),",
        )
    },
    (
        "gateway/forward/headers.py",
        "(_REQUEST_ID.match(incoming) and (not looks_secret(incoming)) and (len(incoming) < 8 or "
        "incoming not in authorization))",
    ): (
        "its one caller (front.begin) calls it only with a client's id, never None (a request "
        "without one gets a new id without the call), so dropping the None test changes nothing"
    ),
    (
        "gateway/forward/connection.py",
        "if (head is not None or message.code == 101 or message.code < 100):",
    ): (
        "the response parser flags an upgrade only on a 101 answer (llhttp: upgrade headers and "
        "status 101), which message.code == 101 refuses already; tested with and without the "
        "Upgrade headers (test_upstream.py, unasked-upgrade and bare-101)"
    ),
    ("gateway/decision_server.py", "if (body is not None):"): (
        "failing a body that has already ended changes nothing: its reader has had its last "
        "chunk (EOF) and reads no more, and the parser error is answered as the next message"
    ),
    ("gateway/decision_server.py", "if (since is not None and now - since >= timeout):"): (
        "connection_lost cancels the idle timer, so it never runs without a transport"
    ),
    (
        "gateway/decision_server.py",
        "if since is not None and (now - since > timeout) and self.transport is not None:",
    ): (
        "the timer is armed for since + timeout and the loop never runs it early; at exact "
        "equality the re-armed timer is due at once and closes on its next run"
    ),
    ("gateway/protocol.py", "if (not content.is_eof()):"): (
        "while the handled request's body has not ended the parser cannot have read another "
        "request, so a message queued then is always the parser's error (_ErrInfo)"
    ),
    (_TOKEN, "\"require\": (['aud', 'sub', 'iat', 'exp', 'jti']),"): (
        "PyJWT requires 'iss' anyway whenever issuer= is given (MissingRequiredClaimError)"
    ),
    (_TOKEN, "\"require\": (['iss', 'sub', 'iat', 'exp', 'jti']),"): (
        "PyJWT requires 'aud' anyway whenever audience= is given (MissingRequiredClaimError)"
    ),
    (_TOKEN, "\"require\": (['iss', 'aud', 'iat', 'exp', 'jti']),"): (
        f"str_claim(payload, 'sub') requires 'sub' a few lines below: {_REFUSED}"
    ),
    (_TOKEN, "\"require\": (['iss', 'aud', 'sub', 'iat', 'exp']),"): (
        f"str_claim(payload, 'jti') requires 'jti' a few lines below: {_REFUSED}"
    ),
    (_TOKEN, "\"require\": (['iss', 'aud', 'sub', 'exp', 'jti']),"): (
        f"check_times() requires 'iat' as an integer: {_REFUSED}"
    ),
    (_TOKEN, "\"require\": (['iss', 'aud', 'sub', 'iat', 'jti']),"): (
        f"check_times() requires 'exp' as an integer: {_REFUSED}"
    ),
}


# --- finding the marked statements ---------------------------------------------------------


@dataclass
class Target:
    path: str  # relative to the root, with '/'
    comment_line: int
    node: ast.AST  # a statement, or an ast.keyword / a (dict, index) holder
    first: int  # the first line the target covers (the comment block included)
    last: int

    def lines(self) -> range:
        return range(self.first, self.last + 1)


@dataclass
class InsideIf:
    """The first statement of an ``if`` block, marked by a comment at the top of the block."""

    parent: ast.If
    node: ast.stmt
    lineno: int = 0
    end_lineno: int = 0

    def __post_init__(self) -> None:
        self.lineno, self.end_lineno = self.node.lineno, self.node.end_lineno or self.node.lineno


@dataclass
class Element:
    """An element of a tuple, list or set display, the target of a comment inside it."""

    seq: ast.Tuple | ast.List | ast.Set
    index: int
    lineno: int
    end_lineno: int


@dataclass
class DictEntry:
    """A ``key: value`` entry of a dict display, the target of a comment inside the display."""

    dict_node: ast.Dict
    index: int
    lineno: int
    end_lineno: int


def security_comments(source: str) -> list[tuple[int, bool]]:
    """(line, trails code) of every ``# SECURITY:`` comment."""
    found = []
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    lines = source.splitlines()
    for tok in tokens:
        if tok.type == tokenize.COMMENT and MARK in tok.string:
            row, col = tok.start
            trails = bool(lines[row - 1][:col].strip())
            found.append((row, trails))
    return found


def _next_code_line(lines: list[str], after: int) -> int:
    row = after + 1
    while row <= len(lines) and (
        not lines[row - 1].strip() or lines[row - 1].lstrip().startswith("#")
    ):
        row += 1
    return row


def targets_of(path: Path, rel: str) -> list[Target]:
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    targets = []
    for row, trails in security_comments(source):
        line = row if trails else _next_code_line(lines, row)
        node = _node_at(tree, line)
        if node is None:
            print(
                f"warning: {rel}:{row}: no statement found for the SECURITY comment",
                file=sys.stderr,
            )
            continue
        end = getattr(node, "end_lineno", None) or line
        if isinstance(node, ast.If | ast.For | ast.While):
            end = max(end, _header_end(node))
            end = node.end_lineno or end
        targets.append(Target(rel, row, node, min(row, line), end))
    return targets


def _header_end(node: ast.If | ast.For | ast.While) -> int:
    head = node.test if isinstance(node, ast.If | ast.While) else node.iter
    return head.end_lineno or head.lineno


def _node_at(tree: ast.AST, line: int) -> ast.AST | None:
    statements = [n for n in ast.walk(tree) if isinstance(n, ast.stmt) and n.lineno == line]
    if statements:
        # The outermost statement starting on the line (a one-line `if x: raise` is the `if`).
        node = min(statements, key=lambda n: (n.col_offset, -(n.end_lineno or 0)))
        # A comment opening an `if` block speaks for the block: its condition is the check.
        for parent in ast.walk(tree):
            if isinstance(parent, ast.If) and parent.body and parent.body[0] is node:
                return InsideIf(parent, node)  # type: ignore[return-value]
        return node
    for n in ast.walk(tree):
        if isinstance(n, ast.keyword) and n.lineno == line:
            return n
        if isinstance(n, ast.Dict):
            for i, key in enumerate(n.keys):
                if key is not None and key.lineno == line:
                    return DictEntry(n, i, key.lineno, n.values[i].end_lineno or key.lineno)  # type: ignore[return-value]
        if isinstance(n, ast.Tuple | ast.List | ast.Set):
            for i, element in enumerate(n.elts):
                if element.lineno == line:
                    return Element(n, i, element.lineno, element.end_lineno or line)  # type: ignore[return-value]
    return None


# --- making mutants ----------------------------------------------------------------------------


@dataclass
class Mutant:
    path: str
    target_line: int
    operator: str
    source: str  # the whole mutated file
    line: int = 0  # first changed line
    before: str = ""
    after: str = ""
    result: str = "pending"  # killed | survived | timeout | equivalent | error
    killed_by: str = ""
    seconds: float = 0.0
    reason: str = ""
    unconfirmed: list[str] = field(default_factory=list)  # failed in the run, passed alone

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.after)


_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
}
_BUILTINS = frozenset(dir(builtins))


def _positions(node: ast.AST) -> tuple[int, int, int, int]:
    return (node.lineno, node.col_offset, node.end_lineno or node.lineno, node.end_col_offset or 0)  # type: ignore[attr-defined]


class Splicer:
    """Replace the exact source span of a node (AST offsets are UTF-8 byte columns)."""

    def __init__(self, source: str) -> None:
        self.raw = source.encode()
        self.starts = [0]
        for line in self.raw.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def span(self, node: ast.AST) -> tuple[int, int]:
        line, col, end_line, end_col = _positions(node)
        return self.starts[line - 1] + col, self.starts[end_line - 1] + end_col

    def replace(self, node: ast.AST, text: str) -> str:
        a, b = self.span(node)
        return (self.raw[:a] + text.encode() + self.raw[b:]).decode()

    def replace_span(self, a: int, b: int, text: str) -> str:
        return (self.raw[:a] + text.encode() + self.raw[b:]).decode()


def _expr(node: ast.AST) -> str:
    return "(" + ast.unparse(node) + ")"


def _header(node: ast.AST) -> list[ast.AST]:
    """The expressions a mutation may touch: a compound statement's header only."""
    if isinstance(node, ast.If | ast.While):
        return [node.test]
    if isinstance(node, ast.For):
        return [node.iter]
    if isinstance(node, DictEntry):
        return [node.dict_node.values[node.index]]
    if isinstance(node, Element):
        element = node.seq.elts[node.index]
        # A tuple element is a record (a rule's fields): its parts are mutated, never dropped.
        return list(element.elts) if isinstance(element, ast.Tuple) else [element]
    if isinstance(node, ast.keyword):
        return [node.value]
    return [node]


def expression_mutants(root: ast.AST, splice: Splicer) -> Iterator[tuple[str, str]]:
    """(operator, mutated source) for every expression inside ``root``."""
    # A call that is a whole statement is removed instead (unwrapping it would be the same).
    statement_call = root.value if isinstance(root, ast.Expr) else None
    for node in ast.walk(root):
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                swapped = _SWAP.get(type(op))
                if swapped is None:
                    continue
                new = copy.deepcopy(node)
                new.ops[i] = swapped()
                yield f"{type(op).__name__}->{swapped.__name__}", splice.replace(node, _expr(new))
        elif isinstance(node, ast.BoolOp):
            for i in range(len(node.values)):
                rest = node.values[:i] + node.values[i + 1 :]
                new_expr: ast.expr = rest[0] if len(rest) == 1 else ast.BoolOp(node.op, rest)
                yield (
                    f"drop operand {i + 1} of {type(node.op).__name__.lower()}",
                    splice.replace(node, _expr(new_expr)),
                )
            other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            yield "and<->or", splice.replace(node, _expr(ast.BoolOp(other, node.values)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield "remove not", splice.replace(node, _expr(node.operand))
        elif isinstance(node, ast.IfExp):
            yield "ifexp: body only", splice.replace(node, _expr(node.body))
            yield "ifexp: else only", splice.replace(node, _expr(node.orelse))
        elif isinstance(node, ast.Call):
            yield from _call_mutants(node, splice, unwrap=node is not statement_call)
        elif isinstance(node, ast.Set | ast.Tuple | ast.List) and 1 < len(node.elts) <= 12:
            for i in range(len(node.elts)):
                new_seq = copy.deepcopy(node)
                del new_seq.elts[i]
                yield f"drop element {i + 1}", splice.replace(node, _expr(new_seq))
        elif isinstance(node, ast.comprehension):
            for i in range(len(node.ifs)):
                a, _ = splice.span(node.ifs[i])
                # the ' if ' before the condition: search back from the condition's start
                head = splice.raw.rfind(b" if ", 0, a)
                _, b = splice.span(node.ifs[i])
                yield "drop comprehension filter", splice.replace_span(head, b, "")


def _call_mutants(node: ast.Call, splice: Splicer, unwrap: bool) -> Iterator[tuple[str, str]]:
    func = node.func
    name = (
        func.attr
        if isinstance(func, ast.Attribute)
        else func.id
        if isinstance(func, ast.Name)
        else ""
    )
    if name == "compare_digest" and len(node.args) == 2:
        a, b = node.args
        yield "compare_digest -> ==", splice.replace(node, _expr(ast.Compare(a, [ast.Eq()], [b])))
        yield (
            "compare_digest -> substring",
            splice.replace(node, _expr(ast.Compare(b, [ast.In()], [a]))),
        )
        return
    if name == "wait_for" and node.args:
        yield "remove the timeout", splice.replace(node, _expr(node.args[0]))
        return
    if name == "compile" and node.args and isinstance(node.args[0], ast.Constant):
        pattern = node.args[0].value
        if isinstance(pattern, str):
            for label, new in _regex_mutants(pattern):
                mutated = copy.deepcopy(node)
                mutated.args[0] = ast.Constant(new)
                yield label, splice.replace(node, _expr(mutated))
        return
    if (
        unwrap
        and isinstance(func, ast.Attribute)
        and len(node.args) == 1
        and not node.keywords
        and isinstance(node.args[0], ast.Name | ast.Attribute)
        and name not in _BUILTINS
        and name not in {"get", "read", "encode", "decode", "startswith", "endswith", "match"}
    ):
        yield f"unwrap {name}()", splice.replace(node, _expr(node.args[0]))


def _regex_mutants(pattern: str) -> Iterator[tuple[str, str]]:
    if pattern.startswith("^"):
        yield "regex: drop ^", pattern[1:]
    if pattern.endswith("$"):
        yield "regex: drop $", pattern[:-1]
    if pattern.endswith("\\Z"):
        yield "regex: drop \\Z", pattern[:-2]
    if "{2,}" in pattern:
        yield "regex: {2,} -> *", pattern.replace("{2,}", "*")


def statement_mutants(target: Target, source: str) -> Iterator[tuple[str, str]]:
    splice = Splicer(source)
    node = target.node
    if isinstance(node, InsideIf):
        # The block's condition (made False, or turned around), then the statement itself.
        yield from statement_mutants(Target(target.path, 0, node.parent, 0, 0), source)
        if not (isinstance(node.node, ast.Raise) and len(node.parent.body) == 1):
            yield from statement_mutants(Target(target.path, 0, node.node, 0, 0), source)
        return
    if isinstance(node, DictEntry):
        d = copy.deepcopy(node.dict_node)
        del d.keys[node.index]
        del d.values[node.index]
        yield "remove dict entry", splice.replace(node.dict_node, ast.unparse(d))
    elif isinstance(node, Element):
        seq = copy.deepcopy(node.seq)
        del seq.elts[node.index]
        yield "remove element", splice.replace(node.seq, _expr(seq))
    elif isinstance(node, ast.keyword):
        yield "remove keyword", _remove_keyword(node, splice, source)
    elif isinstance(node, ast.If | ast.While) and _raises(node.body):
        yield "condition -> False", splice.replace(node.test, "False")
    elif isinstance(node, ast.For):
        yield "loop over nothing", splice.replace(node.iter, "()")
        for inner in node.body:
            if isinstance(inner, ast.If) and _raises(inner.body):
                yield "inner condition -> False", splice.replace(inner.test, "False")
    elif isinstance(node, ast.Raise):
        yield "raise -> pass", splice.replace(node, "pass")
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        yield "remove call", splice.replace(node, "pass")
    for region in _header(node):
        yield from expression_mutants(region, splice)


def _raises(body: list[ast.stmt]) -> bool:
    """The block refuses: it raises, or returns (a refusal answered rather than raised)."""
    return any(isinstance(s, ast.Raise | ast.Return) for s in body)


def _remove_keyword(node: ast.keyword, splice: Splicer, source: str) -> str:
    a, b = splice.span(node)
    rest = splice.raw[b:]
    m = re.match(rb"\s*,", rest)
    return splice.replace_span(a, b + (m.end() if m else 0), "")


def mutants_for(target: Target, source: str) -> list[Mutant]:
    out: list[Mutant] = []
    seen = {hashlib.sha256(source.encode()).hexdigest()}
    for operator, mutated in statement_mutants(target, source):
        digest = hashlib.sha256(mutated.encode()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        try:
            compile(mutated, target.path, "exec")
        except SyntaxError:
            continue
        mutant = Mutant(target.path, target.comment_line, operator, mutated)
        mutant.line, mutant.before, mutant.after = _changed_line(source, mutated)
        out.append(mutant)
    return out


def _changed_line(before: str, after: str) -> tuple[int, str, str]:
    a, b = before.splitlines(), after.splitlines()
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            old = " / ".join(s.strip() for s in a[i1:i2])
            new = " / ".join(s.strip() for s in b[j1:j2]) or "(removed)"
            return i1 + 1, old, new
    return 0, "", ""


# --- selecting lines -----------------------------------------------------------------------


def all_targets(base: Path, only: list[str] | None) -> list[Target]:
    targets: list[Target] = []
    for path in sorted((base / "gateway").rglob("*.py")):
        rel = path.relative_to(base).as_posix()
        if only and rel not in only:
            continue
        targets.extend(targets_of(path, rel))
    return targets


def changed_lines(rev: str, snapshot: str | None) -> dict[str, set[int]]:
    """Lines of gateway/ added or changed since ``rev`` in ``snapshot`` (a commit; ``None``:
    the working tree)."""
    diff = subprocess.run(
        [
            "git",
            "diff",
            "-U0",
            "--no-color",
            rev,
            *([snapshot] if snapshot else []),
            "--",
            "gateway",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    changed: dict[str, set[int]] = {}
    current = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else None
        elif line.startswith("@@") and current:
            m = re.search(r"\+(\d+)(?:,(\d+))?", line)
            if m:
                start, count = int(m.group(1)), int(m.group(2) or "1")
                # a pure deletion (count 0) touches the line it was removed before
                changed.setdefault(current, set()).update(range(start, start + max(count, 1)))
    return changed


# --- running ----------------------------------------------------------------------------------


def make_copy(snapshot: str | None) -> Path:
    """A private copy of the project: the files of commit ``snapshot``, or (``None``) of the
    working tree as it is now, tracked and untracked but not ignored."""
    work = Path(tempfile.mkdtemp(prefix="mutate-security-"))
    if snapshot is not None:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", snapshot], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        return work
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for rel in (p for p in out.decode().split("\0") if p):
        src = ROOT / rel
        if not src.is_file() or rel.startswith(".venv/"):
            continue
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return work


# Loaded into every run: property tests without a deadline (a loaded machine must not kill a
# mutant) and with a fixed seed (a mutant's verdict must not depend on luck).
PLUGIN = "_mutation_settings"
# It also writes the node id of every failing test to $MUTATION_FAILURES, one a line.
PLUGIN_SOURCE = """
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "mutation", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("mutation")


def pytest_runtest_logreport(report):
    if report.failed:
        with open(os.environ["MUTATION_FAILURES"], "a") as out:
            out.write(report.nodeid + "\\n")


def pytest_collectreport(report):
    if report.failed:
        with open(os.environ["MUTATION_FAILURES"], "a") as out:
            out.write(report.nodeid + "\\n")
"""


def test_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(work)  # the copy's package first, for pytest and its subprocesses
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant of the same size must never hit a stale .pyc
    env.pop("PYTEST_ADDOPTS", None)
    return env


def tests_for(path: str, work: Path) -> list[str]:
    module = path.removesuffix(".py").replace("/", ".")
    package, _, stem = module.rpartition(".")
    named = []
    for test in sorted((work / "tests").rglob("test_*.py")):
        text = test.read_text()
        if test.stem == f"test_{stem}" or module in text or f"from {package} import {stem}" in text:
            named.append(test.relative_to(work).as_posix())
    # The tests of the module's own package (gateway/keys/x.py: tests/keys/).
    own = work / "tests" / package.rpartition(".")[2]
    if package != "gateway" and own.is_dir():
        named += [t.relative_to(work).as_posix() for t in sorted(own.glob("test_*.py"))]
    ordered = [t for t in MAPPED.get(path, []) if (work / t).exists()]
    ordered += [t for t in dict.fromkeys(named) if t not in ordered]
    ordered.append("tests/security")
    return ordered


@dataclass
class Outcome:
    result: str  # passed | failed | timeout
    failures: list[str]  # node ids (or files, for collection errors) that failed
    seconds: float
    last_line: str = ""


def run_pytest(
    work: Path, tests: list[str], timeout: float, *, stop_first: bool = True, skip: Skip = ()
) -> Outcome:
    command = [
        sys.executable,
        "-m",
        "pytest",
        *(["-x"] if stop_first else []),
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "-p",
        PLUGIN,
        "-o",
        "addopts=-m 'not slow' --strict-markers",
        *skip_args(skip),
        *tests,
    ]
    started = time.monotonic()
    report = work / ".mutation-failures"
    report.write_text("")
    env = {**test_env(work), "MUTATION_FAILURES": str(report)}
    proc = subprocess.Popen(
        command,
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: on timeout, only what it started dies
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Outcome("timeout", [], time.monotonic() - started)
    seconds = time.monotonic() - started
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if proc.returncode == 0:
        return Outcome("passed", [], seconds, last)
    failures = list(dict.fromkeys(t for t in report.read_text().splitlines() if t))
    return Outcome("failed", failures, seconds, last)


Skip = tuple[str, ...]


def skip_args(skip: Skip) -> list[str]:
    """Tests that already fail on the unmutated copy: a node id is deselected, a file whose
    collection failed is ignored."""
    return [f"--deselect={t}" if "::" in t else f"--ignore={t}" for t in skip]


def run_mutant(
    mutant: Mutant, work: Path, timeout: float, mapped_only: bool, flaky: list[str]
) -> None:
    """Kill ``mutant`` or find that it survives. A kill counts once the failing test, run on its
    own, fails again; a test that passes alone (it failed from load or order) is set aside, for
    this mutant and every later one (``flaky``), and the run repeated, at most twice."""
    skip: Skip = tuple(flaky)
    file = work / mutant.path
    original = file.read_text()
    file.write_text(mutant.source)
    started = time.monotonic()
    try:
        tests = tests_for(mutant.path, work)
        if not mapped_only:
            tests.append("tests")
        for _ in range(3):
            outcome = run_pytest(work, tests, timeout, skip=skip)
            if outcome.result != "failed" or not outcome.failures:
                break
            culprit = outcome.failures[0]
            if run_pytest(work, [culprit], timeout).result != "passed":
                break
            mutant.unconfirmed.append(culprit)
            flaky.append(culprit)
            skip = (*skip, culprit)
    finally:
        file.write_text(original)
    mutant.seconds = time.monotonic() - started
    if outcome.result == "passed":
        reason = EQUIVALENT.get(mutant.key)
        mutant.result, mutant.reason = ("equivalent", reason) if reason else ("survived", "")
    elif outcome.result == "timeout":
        mutant.result = "timeout"
    else:
        mutant.result = "killed"
        mutant.killed_by = outcome.failures[0] if outcome.failures else outcome.last_line


def describe(m: Mutant) -> str:
    return f"{m.path}:{m.line} [{m.operator}]\n    - {m.before}\n    + {m.after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changed", metavar="REV", help="only SECURITY lines changed since REV")
    parser.add_argument(
        "--rev",
        default="HEAD",
        help="the commit to mutate (default HEAD; 'worktree': the working tree as it is)",
    )
    parser.add_argument("--file", action="append", help="only this file (repeatable)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    parser.add_argument("--mapped-only", action="store_true", help="mapped tests only (faster)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--match", help="only mutants whose operator or mutated line has this")
    parser.add_argument(
        "--survivors-of",
        type=Path,
        metavar="JSON",
        help="only the mutants that survived in an earlier run's --json results",
    )
    parser.add_argument(
        "--max-baseline-failures",
        type=int,
        default=5,
        help="tests failing on the unmutated copy are excluded and listed, up to this many",
    )
    args = parser.parse_args(argv)

    snapshot = None if args.rev == "worktree" else args.rev
    work = make_copy(snapshot)
    (work / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    try:
        return run(args, snapshot, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, snapshot: str | None, work: Path) -> int:
    targets = all_targets(work, args.file)
    if args.changed:
        changed = changed_lines(args.changed, snapshot)
        targets = [t for t in targets if changed.get(t.path, set()) & set(t.lines())]
    mutants: list[Mutant] = []
    for target in targets:
        mutants.extend(mutants_for(target, (work / target.path).read_text()))
    if args.match:
        mutants = [m for m in mutants if args.match in m.operator or args.match in m.after]
    if args.survivors_of:
        earlier = json.loads(args.survivors_of.read_text())
        wanted = {(m["path"], m["after"]) for m in earlier if m["result"] == "survived"}
        mutants = [m for m in mutants if m.key in wanted]
    where = snapshot or "working tree"
    print(f"{where}: {len(targets)} SECURITY statement(s), {len(mutants)} mutant(s)")
    if args.list or not mutants:
        for m in mutants:
            print(describe(m))
        return 0

    probe = subprocess.run(
        [sys.executable, "-c", "import gateway; print(gateway.__file__)"],
        cwd=work,
        env=test_env(work),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not probe.startswith(str(work)):
        print(f"the copy does not import its own package ({probe})", file=sys.stderr)
        return 2
    files = sorted({m.path for m in mutants})
    baseline = sorted({t for f in files for t in tests_for(f, work)})
    if not args.mapped_only:
        baseline = ["tests"]
    print(f"baseline: {' '.join(baseline)}", flush=True)
    outcome = run_pytest(work, baseline, args.timeout * 3, stop_first=False)
    skip: Skip = tuple(outcome.failures)
    if outcome.result == "timeout" or (outcome.result == "failed" and not skip):
        print(f"the unmutated copy cannot be tested ({outcome.last_line})", file=sys.stderr)
        return 2
    if len(skip) > args.max_baseline_failures:
        print(f"the unmutated copy fails {len(skip)} tests: fix those first", file=sys.stderr)
        for test in skip:
            print(f"  {test}", file=sys.stderr)
        return 2
    print(f"baseline in {outcome.seconds:.0f} s: {outcome.last_line}", flush=True)
    for test in skip:
        print(f"  excluded (fails unmutated): {test}", flush=True)
    flaky = list(skip)
    for i, mutant in enumerate(mutants, 1):
        run_mutant(mutant, work, args.timeout, args.mapped_only, flaky)
        label = mutant.killed_by or mutant.reason
        print(
            f"[{i}/{len(mutants)}] {mutant.result:10} {mutant.seconds:5.0f}s {describe(mutant)}"
            + (f"\n    by {label}" if label else "")
            + "".join(f"\n    (set aside, passed alone: {t})" for t in mutant.unconfirmed),
            flush=True,
        )

    counted = [m for m in mutants if m.result != "equivalent"]
    killed = [m for m in counted if m.result in ("killed", "timeout")]
    survivors = [m for m in counted if m.result == "survived"]
    equivalent = [m for m in mutants if m.result == "equivalent"]
    print()
    print(
        f"score: {len(killed)}/{len(counted)} killed"
        + (f" ({100 * len(killed) / len(counted):.0f}%)" if counted else "")
        + f", {len(equivalent)} equivalent, {len(survivors)} survived"
    )
    for m in equivalent:
        print(f"equivalent: {describe(m)}\n    because {m.reason}")
    for m in survivors:
        print(f"SURVIVED: {describe(m)}")
    for test in flaky[len(skip) :]:
        print(f"set aside (failed in a run, passed alone): {test}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [{k: v for k, v in m.__dict__.items() if k != "source"} for m in mutants], indent=2
            )
        )
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
