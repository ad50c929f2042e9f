"""A strict JSON (RFC 8259) syntax check for MicroPython.

MicroPython's `json.loads` is lenient: it accepts missing commas and colons
(``{"a" 1 "b" 2}``), trailing commas, leading zeros, unknown escapes and raw
control characters in strings.  CPython's `json` rejects all of these.  The
firmware runs this check before `json.loads` so that a payload is accepted
or refused identically on the sensor and on the gateway; CPython does not
need it (its parser is strict and the gateway's hot path stays fast).

Nesting deeper than `MAX_DEPTH` is refused on both Pythons: our messages
nest two levels at most, and CPython's parser would otherwise fail on a
recursion bomb (``[[[[...``) that fits in 2 KiB while MicroPython's would not.

The scan is iterative (no recursion, so deep nesting cannot exhaust the
small MicroPython stack) and works on the raw bytes, so it allocates only
the container stack.

`double` reads a JSON number from its text exactly as CPython's parser
does: the IEEE 754 double nearest to it, as an exact integer pair.  A
MicroPython built with single-precision floats (the ESP32's) parses numbers
into float32, which cannot tell 160.000001 from 160; the payload checks
decide on the exact double instead, so that both Pythons accept and refuse
the same numbers.
"""

MAX_DEPTH = 32

# Bytes of the JSON grammar, as ints (indexing bytes yields ints on both ports).
_QUOTE = 0x22
_BACKSLASH = 0x5C
_LBRACE = 0x7B
_RBRACE = 0x7D
_LBRACKET = 0x5B
_RBRACKET = 0x5D
_COMMA = 0x2C
_COLON = 0x3A
_MINUS = 0x2D
_PLUS = 0x2B
_DOT = 0x2E
_ZERO = 0x30
_NINE = 0x39
_WS = b" \t\n\r"
_ESCAPES = b'"\\/bfnrtu'
_HEX = b"0123456789abcdefABCDEF"

# parser states
_VALUE = 0  # a value must follow
_VALUE_OR_CLOSE = 1  # just after '[': a value or ']'
_KEY = 2  # after ',' in an object: a key must follow
_KEY_OR_CLOSE = 3  # just after '{': a key or '}'
_AFTER = 4  # after a value: ',', a closing bracket, or the end


def valid(b: bytes, members: list[tuple[int, int, int, int]] | None = None) -> bool:
    """True if ``b`` is exactly one JSON value (RFC 8259), with optional white
    space around, nested at most `MAX_DEPTH` deep.

    With a list ``members``, each number that is a member of the outermost
    object is added to it as ``(key_start, key_end, value_start, value_end)``
    (the key's span includes its quotes), so its exact text can be read."""
    n = len(b)
    i = 0
    key_start = key_end = 0
    stack: list[int] = []  # open containers: _LBRACE or _LBRACKET
    state = _VALUE
    while True:
        while i < n and b[i] in _WS:
            i += 1
        if state == _AFTER:
            if not stack:
                return i == n
            if i >= n:
                return False
            c = b[i]
            top = stack[-1]
            if c == _COMMA:
                state = _KEY if top == _LBRACE else _VALUE
            elif (c == _RBRACE and top == _LBRACE) or (c == _RBRACKET and top == _LBRACKET):
                stack.pop()
            else:
                return False
            i += 1
            continue
        if i >= n:
            return False
        c = b[i]
        if state == _KEY or state == _KEY_OR_CLOSE:
            if state == _KEY_OR_CLOSE and c == _RBRACE:
                stack.pop()
                i += 1
                state = _AFTER
                continue
            if c != _QUOTE:
                return False
            key_start = i
            i = _string(b, i, n)
            if i < 0:
                return False
            key_end = i
            while i < n and b[i] in _WS:
                i += 1
            if i >= n or b[i] != _COLON:
                return False
            i += 1
            state = _VALUE
            continue
        # _VALUE or _VALUE_OR_CLOSE
        if state == _VALUE_OR_CLOSE and c == _RBRACKET:
            stack.pop()
            i += 1
            state = _AFTER
            continue
        if (c == _LBRACE or c == _LBRACKET) and len(stack) >= MAX_DEPTH:
            return False
        if c == _LBRACE:
            stack.append(_LBRACE)
            i += 1
            state = _KEY_OR_CLOSE
            continue
        if c == _LBRACKET:
            stack.append(_LBRACKET)
            i += 1
            state = _VALUE_OR_CLOSE
            continue
        if c == _QUOTE:
            i = _string(b, i, n)
        elif c == _MINUS or _ZERO <= c <= _NINE:
            start = i
            i = _number(b, i, n)
            if members is not None and i > 0 and len(stack) == 1 and stack[0] == _LBRACE:
                members.append((key_start, key_end, start, i))
        else:
            i = _literal(b, i, n)
        if i < 0:
            return False
        state = _AFTER


def _string(b: bytes, i: int, n: int) -> int:
    """Index after the string starting at b[i] (a quote), or -1."""
    i += 1
    while i < n:
        c = b[i]
        if c == _QUOTE:
            return i + 1
        if c < 0x20:
            return -1  # raw control characters must be escaped
        if c == _BACKSLASH:
            i += 1
            if i >= n or b[i] not in _ESCAPES:
                return -1
            if b[i] == 0x75:  # \uXXXX
                if i + 4 >= n:
                    return -1
                for k in range(i + 1, i + 5):
                    if b[k] not in _HEX:
                        return -1
                i += 4
        i += 1
    return -1


def _digits(b: bytes, i: int, n: int) -> int:
    """Index after a run of at least one digit at b[i], or -1."""
    j = i
    while j < n and _ZERO <= b[j] <= _NINE:
        j += 1
    return j if j > i else -1


def _number(b: bytes, i: int, n: int) -> int:
    """Index after the number at b[i], or -1 (no leading zeros, '+', bare '.')."""
    if b[i] == _MINUS:
        i += 1
    if i < n and b[i] == _ZERO:
        i += 1
    else:
        i = _digits(b, i, n)
        if i < 0:
            return -1
    if i < n and b[i] == _DOT:
        i = _digits(b, i + 1, n)
        if i < 0:
            return -1
    if i < n and b[i] in b"eE":
        i += 1
        if i < n and (b[i] == _PLUS or b[i] == _MINUS):
            i += 1
        i = _digits(b, i, n)
    return i


def _literal(b: bytes, i: int, n: int) -> int:
    for word in (b"true", b"false", b"null"):
        if b[i : i + len(word)] == word:
            return i + len(word)
    return -1


# IEEE 754 binary64: 53-bit significands, subnormals down to 2**-1074.
_BITS = 53
_EMIN = -1074
_EMAX = 1024  # 2**1024 and above round to infinity


def double(b: bytes, i: int, j: int) -> tuple[int, int] | None:
    """The double nearest the JSON number ``b[i:j]`` (round half to even, as
    CPython's `float`) as ``(m, e)`` with value ``m * 2**e`` exactly, or None
    when it rounds to infinity.  Integer arithmetic only, so a float32 build
    gets the same answer."""
    neg = b[i] == _MINUS
    if neg:
        i += 1
    digits = 0
    count = 0  # significant digits kept in `digits`
    point = -1
    exp = 0
    k = i
    while k < j:
        c = b[k]
        if c == _DOT:
            point = k
        elif _ZERO <= c <= _NINE:
            if digits or c != _ZERO:
                digits = digits * 10 + c - _ZERO
                count += 1
            if point >= 0:
                exp -= 1
        else:  # 'e' or 'E'
            exp += int(str(b[k + 1 : j], "ascii"))
            break
        k += 1
    if digits == 0:
        return (0, 0)
    # value = digits * 10**exp, with 10**(count-1) <= digits < 10**count
    top = count + exp  # the value lies in [10**(top-1), 10**top)
    if top > 310:
        return None
    if top < -330:
        return (0, 0)  # under half the smallest subnormal
    num = digits * 10**exp if exp >= 0 else digits
    den = 1 if exp >= 0 else 10**-exp
    # e such that 2**(_BITS-1) <= num / den / 2**e < 2**_BITS, not below _EMIN
    e = bit_length(num) - bit_length(den) - _BITS
    while True:
        if e < _EMIN:
            e = _EMIN
        q, r, d = _divide(num, den, e)
        if q >= 1 << _BITS:
            e += 1
        elif q < 1 << (_BITS - 1) and e > _EMIN:
            e -= 1
        else:
            break
    if 2 * r > d or (2 * r == d and q & 1):
        q += 1
        if q == 1 << _BITS:
            q >>= 1
            e += 1
    if e + bit_length(q) > _EMAX:
        return None
    return (-q if neg else q, e)


def _divide(num: int, den: int, e: int) -> tuple[int, int, int]:
    """Quotient, remainder and divisor of num / (den * 2**e)."""
    if e >= 0:
        d = den << e
        return num // d, num % d, d
    n = num << -e
    return n // den, n % den, den


def bit_length(x: int) -> int:
    # MicroPython's int has no bit_length()
    return len(bin(x)) - 2 if x > 0 else 0
