"""Go's float formatting as Prometheus's messages and labels use it (``%g``, ``%v``, FormatFloat 'f')."""

from __future__ import annotations

import math
from decimal import Decimal


def go_g(value: float) -> str:
    """A float as Go's ``%g`` prints it (shortest digits; exponent form below 1e-4 or from 1e6 up)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    dec = Decimal(repr(float(value)))
    exponent = dec.adjusted()
    sign, digit_tuple, _ = dec.as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    prefix = "-" if sign else ""
    if exponent < -4 or exponent >= 6:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{body}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"
    text = format(dec, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def go_v(value: float) -> str:
    """A float as Go's ``%v`` prints it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    dec = Decimal(repr(float(value)))
    exponent = dec.adjusted()
    if exponent < -4 or exponent >= 21:
        digits = "".join(map(str, dec.as_tuple().digits)).rstrip("0") or "0"
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        sign = "-" if value < 0 else ""
        return f"{sign}{body}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"
    text = format(dec, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(value: float) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64): shortest digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "-0" if text == "0" and math.copysign(1, value) < 0 else text
