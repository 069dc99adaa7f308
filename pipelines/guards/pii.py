"""PII detection by pattern and checksum: e-mail, phone, payment card, IBAN, IP address.

Why not Presidio: `presidio-analyzer` installs offline, and its pattern recognisers need no spaCy model
(its `NoOpNlpEngine`), but the package imports spaCy itself (`nlp_engine/nlp_artifacts.py`), so spaCy,
thinc, blis & co. would join every served model's environment for what are, in Presidio too, regular
expressions plus checksums. Those are small enough to keep here, stdlib only: Luhn for card numbers
(as Presidio's `CreditCardRecognizer`), ISO 7064 mod-97 for IBANs (`IbanRecognizer`), `ipaddress` for IPs.
Entity names are Presidio's, so a later switch keeps configs and traces readable.

Patterns favour well-formed values (a phone number with separators or a leading +, a card number that
passes Luhn): a bare run of digits that fails its checksum (an order number) is left alone.

    >>> [f.kind for f in PIIGuard(action="flag").find("card 4111 1111 1111 1111, call +44 20 7946 0958")]
    ['CREDIT_CARD', 'PHONE_NUMBER']
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from pipelines.guards.base import Finding, Guard, GuardConfigError, non_overlapping


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616: move the country code and check digits to the end, letters to numbers, mod 97 == 1."""
    iban = iban.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34:
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _card(match: str) -> bool:
    digits = _digits(match)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone(match: str) -> bool:
    digits = _digits(match)
    if re.fullmatch(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}", match.strip()):
        return False  # a date, not a number to call
    # Short numbers only with a phone's marks (+country, (area)): "ref 1234 5678" is a booking reference.
    shortest = 7 if match.lstrip().startswith(("+", "(")) else 9
    return shortest <= len(digits) <= 15


def _ip(match: str) -> bool:
    try:
        ipaddress.ip_address(match)
    except ValueError:
        return False
    return True


# entity -> (pattern, validator). Order matters only for overlaps: the earliest, then longest, match wins.
RECOGNISERS: dict[str, tuple[re.Pattern, Callable[[str], bool]]] = {
    "EMAIL_ADDRESS": (re.compile(r"\b[\w.%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b"), lambda m: True),
    "CREDIT_CARD": (re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    # Printed in groups of four (or not at all): the groups keep the match from running into the next word.
    "IBAN_CODE": (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), iban_ok),
    "IP_ADDRESS": (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{1,4}\b", re.I), _ip),
    "PHONE_NUMBER": (
        # +CC, an optional (area code), then 2-5 groups of digits split by space, dot or dash; or 10+ bare digits
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,5}){1,5}(?![\w-])"
            r"|(?<![\w+])\+?\d{10,15}(?!\w)"
        ),
        _phone,
    ),
}


class PIIGuard(Guard):
    """Finds personal data of the listed `entities` (default: all of `RECOGNISERS`)."""

    default_message = "the text holds personal data (PII)"

    def __init__(self, action: str = "redact", entities: list[str] | None = None, **kwargs):
        super().__init__(action, **kwargs)
        self.entities = list(entities) if entities else list(RECOGNISERS)
        unknown = [e for e in self.entities if e not in RECOGNISERS]
        if unknown:
            raise GuardConfigError(f"guard {self.name!r}: unknown entities {unknown}; choose from {list(RECOGNISERS)}")

    def find(self, text: str) -> list[Finding]:
        found = []
        for entity in self.entities:
            pattern, valid = RECOGNISERS[entity]
            found += [Finding(m.start(), m.end(), entity) for m in pattern.finditer(text) if valid(m.group())]
        # A card number also parses as a phone number: the checksum-validated, longer match wins.
        return non_overlapping(found)
