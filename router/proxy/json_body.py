"""Strict JSON for request bodies: what json.loads lets through but nothing downstream can use
(NaN, Infinity, nesting past any real request, lone surrogates) is refused or repaired here."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from router.proxy.errors import ProxyError, bad_request
from router.text import UNSTORABLE, storable

# Deeper than any chat request (a JSON schema in response_format or tools is a dozen levels);
# json.loads itself gives up near 1,000, and the provider client's encoder is recursive too.
MAX_DEPTH = 64
# A \uD800-\uDFFF or \u0000 escape somewhere in the raw text: only then can a string hold one
# (a valid surrogate pair decodes to one code point; a raw NUL byte is not valid JSON).
UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")


def _refuse_constant(name: str) -> Any:
    raise bad_request(f"{name} is not valid JSON: send numbers as finite values")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise bad_request(f"the number {text[:20]} is out of range")
    return value


def load_json(raw: bytes) -> Any:
    """The parsed UTF-8 body; a 400 naming the problem for anything json.loads would choke on
    or pass on to choke later. Lone surrogates and NUL become U+FFFD, as a UTF-8 decoder makes a
    byte it cannot read."""
    try:
        # Decoded here, not by json.loads, which also takes UTF-16 and UTF-32: a lone surrogate
        # there would pass the check below (it reads the raw bytes as UTF-8) and fail later.
        text = raw.decode("utf-8-sig")
        data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ProxyError:
        raise
    except RecursionError:
        raise bad_request(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("the request body is not valid JSON") from None
    except ValueError:  # Python's limit on integer digits (4,300 by default)
        limit = sys.get_int_max_str_digits()
        raise bad_request(f"the request body has an integer of over {limit} digits") from None
    repair = UNSTORABLE_ESCAPE.search(raw) is not None
    # Fewer brackets than MAX_DEPTH (most requests) cannot nest deeper: no walk needed.
    if repair or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        return _checked(data, repair)
    return data


def _checked(data: Any, repair: bool) -> Any:
    """Check the depth without recursion; with `repair`, replace lone surrogates in place."""
    if repair and isinstance(data, str):
        return storable(data)
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise bad_request(f"the request body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            if repair and any(UNSTORABLE.search(key) for key in node):
                fixed = {storable(key): value for key, value in node.items()}
                node.clear()
                node.update(fixed)
            for key, value in node.items():
                if isinstance(value, dict | list):
                    stack.append((value, depth + 1))
                elif repair and isinstance(value, str):
                    node[key] = storable(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, dict | list):
                    stack.append((value, depth + 1))
                elif repair and isinstance(value, str):
                    node[index] = storable(value)
    return data
