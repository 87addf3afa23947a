"""Tag filter expressions: `red circle AND NOT (simple background OR white background)`.

Operators are the upper-case words AND, OR, NOT and unescaped parentheses; everything between
them is one tag, spaces included (no quotes needed). A tag matches a caption that has that
whole tag, ignoring case. Parentheses that belong to a tag are written escaped, `\\(`, as
in captions, or the tag is put in double quotes (`"poster (object)"`). `compile_filter`
returns a predicate over a caption's set of tag keys (`tags.tag_key`), so filtering 10,000
captions is 10,000 set look-ups, not 10,000 parses.
"""

import re
from typing import Callable, FrozenSet, List

from lora_trainer.dataset.tags import tag_key
from lora_trainer.errors import UserError

Predicate = Callable[[FrozenSet[str]], bool]


def _tokens(expression: str) -> List[str]:
    """Operators and parentheses as tokens; runs of other text merged into one tag token."""
    out: List[str] = []
    text: List[str] = []

    def flush():
        tag = "".join(text).strip()
        if tag:
            out.append("TAG:" + tag)
        text.clear()

    position = 0
    while position < len(expression):
        if expression[position] == '"':
            end = expression.find('"', position + 1)
            if end < 0:
                raise UserError(f"filter {expression!r}: a double quote is not closed")
            flush()
            quoted = expression[position + 1:end].strip()
            if quoted:
                out.append("TAG:" + quoted)
            position = end + 1
            continue
        if expression.startswith("\\", position) and position + 1 < len(expression):
            text.append(expression[position:position + 2])
            position += 2
            continue
        match = re.match(r"(AND|OR|NOT)(?![\w])", expression[position:])
        boundary = position == 0 or not (expression[position - 1].isalnum() or expression[position - 1] == "_")
        if match and boundary:
            flush()
            out.append(match.group(1))
            position += len(match.group(1))
            continue
        ch = expression[position]
        if ch in "()":
            flush()
            out.append(ch)
        else:
            text.append(ch)
        position += 1
    flush()
    return out


class _Parser:
    def __init__(self, tokens: List[str], expression: str):
        self.tokens, self.position, self.expression = tokens, 0, expression

    def peek(self):
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.position += 1
        return token

    def fail(self, message: str):
        raise UserError(f"filter {self.expression!r}: {message}")

    def expr(self) -> Predicate:
        left = self.term()
        while self.peek() == "OR":
            self.take()
            right = self.term()
            left = (lambda a, b: lambda keys: a(keys) or b(keys))(left, right)
        return left

    def term(self) -> Predicate:
        left = self.factor()
        while self.peek() == "AND":
            self.take()
            right = self.factor()
            left = (lambda a, b: lambda keys: a(keys) and b(keys))(left, right)
        return left

    def factor(self) -> Predicate:
        token = self.take()
        if token == "NOT":
            inner = self.factor()
            return lambda keys: not inner(keys)
        if token == "(":
            inner = self.expr()
            if self.take() != ")":
                self.fail("a '(' is not closed")
            return inner
        if token is None:
            self.fail("it ends where a tag was expected")
        if not token.startswith("TAG:"):
            self.fail(f"{token!r} where a tag was expected")
        key = tag_key(token[4:])
        return lambda keys: key in keys


def compile_filter(expression: str) -> Predicate:
    """A predicate over frozensets of tag keys; an empty expression matches everything."""
    if not expression or not expression.strip():
        return lambda keys: True
    parser = _Parser(_tokens(expression), expression)
    predicate = parser.expr()
    if parser.peek() is not None:
        parser.fail(f"unexpected {parser.peek().replace('TAG:', '')!r} (a ')' without '(' or two tags without AND/OR?)")
    return predicate
