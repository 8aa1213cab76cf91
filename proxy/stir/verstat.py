"""verstat on the caller's URI (3GPP TS 24.229 §7.2A.20): the switch learns
the verification result from the P-Asserted-Identity, or From without one.

In a SIP URI with a telephone number, verstat is a parameter of the user
part (``sip:+12025550123;verstat=TN-Validation-Passed@host;user=phone``);
in a tel URI a URI parameter. Any verstat already there is removed first:
an upstream peer could have put one there to vouch for its own calls.
"""

from __future__ import annotations

import re

_USER_PARAM = re.compile(r";verstat=[^;@]*", re.I)
_URI_PARAM = re.compile(r";verstat=[^;>?,]*", re.I)


def with_verstat(value: str, verstat: str) -> str:
    """One name-addr or addr-spec header value with its verstat replaced."""
    lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            return value
        return value[: lt + 1] + _uri_with_verstat(value[lt + 1 : gt], verstat) + value[gt:]
    # addr-spec: everything after the URI is a header parameter (RFC 3261
    # §20.10); the value gets brackets, so verstat cannot be read as one
    at = value.find("@")
    semi = value.find(";", at + 1 if at >= 0 else 0)
    uri, params = (value, "") if semi < 0 else (value[:semi], value[semi:])
    return f"<{_uri_with_verstat(uri.strip(), verstat)}>{params}"


def _uri_with_verstat(uri: str, verstat: str) -> str:
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return uri
    scheme = scheme.lower()
    if scheme == "tel":
        return f"{uri[: len(scheme) + 1]}{_URI_PARAM.sub('', rest)};verstat={verstat}"
    if scheme not in ("sip", "sips"):
        return uri
    at = rest.find("@")
    if at < 0:
        return uri  # no user part, no number to vouch for
    user, host = rest[:at], rest[at:]
    user = _USER_PARAM.sub("", user)
    host = _URI_PARAM.sub("", host)
    return f"{uri[: len(scheme) + 1]}{user};verstat={verstat}{host}"
