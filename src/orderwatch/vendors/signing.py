"""Request and response signatures: the reference protocol's (DESIGN §5) and the schemes
Chinese open APIs use, selectable per vendor by ``sign_type``.

Every scheme signs the same **canonical string**: the top-level fields except the signature
field and the ``exclude``d ones, sorted by key, joined as ``key=value&key=value``. Strings
are written raw, other scalars as JSON text (``1``, ``true``), objects and arrays as compact
JSON with sorted keys and non-ASCII kept. Empty values (``None`` and ``""``; ``0``,
``false``, ``[]`` and ``{}`` are not empty) are left out, or written as ``key=`` when
``keep_empty`` is set. The string is hashed as UTF-8.

========================  ==========================================================  =====
``sign_type``             signature                                                   hex
========================  ==========================================================  =====
``HMAC-SHA256``           HMAC-SHA256(secret, canonical)                              lower
``MD5``                   MD5(canonical + "&key=" + secret) (WeChat Pay v2 MD5)       upper
``WECHAT-HMAC-SHA256``    HMAC-SHA256(secret, canonical + "&key=" + secret)           upper
``SM3``                   SM3(canonical + "&key=" + secret) (GB/T 32905)              lower
``RSA2``                  base64 RSASSA-PKCS1-v1_5 SHA-256 with our RSA key (Alipay)  —
``SM2``                   base64 DER SM2 signature with SM3 and a user id (GB/T 32918) —
========================  ==========================================================  =====

The hex schemes' letter case can be overridden (``hex_case``); it is compared exactly, as
the vendor writes it. For ``RSA2`` and ``SM2`` we sign with *our* private key and verify the
vendor's answers with the *vendor's* public key. SM2 signatures are randomised (a fresh
``k`` per signature), so only verification is deterministic; ``verify`` accepts DER or the
raw 64-byte ``r || s``, base64-encoded.

Libraries: RSA and SM3 are OpenSSL's through ``cryptography``. ``cryptography`` cannot use
the SM2 curve, so SM2 signatures are GmSSL's through ``gmssl_pyx`` (C, about 1 ms; GmSSL
prints a line to stderr when a well-formed SM2 signature does not verify), and the one-time
key arithmetic when a key is loaded (the public point of a private key, whether a point is
on the curve) is ``gmalg``'s (pure Python).

:class:`Signer` holds one vendor's choice; :func:`signer_for` builds it from
:class:`~orderwatch.settings.VendorSettings`. ``verify`` never raises: junk is ``False``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import gmalg  # type: ignore[import-untyped]
import gmssl_pyx  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

# One encoder for the hot path: json.dumps with options builds a new one per call.
_JSON_SORTED = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))

if TYPE_CHECKING:
    from ..settings import VendorSettings

SignType = Literal["HMAC-SHA256", "MD5", "WECHAT-HMAC-SHA256", "RSA2", "SM3", "SM2"]
HexCase = Literal["lower", "upper"]

SIGN_TYPES: tuple[str, ...] = get_args(SignType)
#: schemes keyed with the shared ``secret``
SYMMETRIC: frozenset[str] = frozenset({"HMAC-SHA256", "MD5", "WECHAT-HMAC-SHA256", "SM3"})
#: schemes with our private key and the vendor's public key
ASYMMETRIC: frozenset[str] = frozenset({"RSA2", "SM2"})
#: the letter case of the hex schemes when ``hex_case`` is not set
DEFAULT_HEX_CASE: dict[str, HexCase] = {
    "HMAC-SHA256": "lower",
    "MD5": "upper",
    "WECHAT-HMAC-SHA256": "upper",
    "SM3": "lower",
}
#: GM/T 0009-2012's default distinguishing identifier
DEFAULT_SM2_USER_ID = "1234567812345678"
MIN_RSA_BITS = 2048

_SM2_N = 0xFFFFFFFE_FFFFFFFF_FFFFFFFF_FFFFFFFF_7203DF6B_21C6052B_53BBF409_39D54123
_OID_SM2 = bytes.fromhex("2a811ccf5501822d")  # 1.2.156.10197.1.301
_OID_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")


# ---------------------------------------------------------------- the canonical string


def _text(value: Any) -> str:
    # Fast paths write exactly what json.dumps would (the hot path signs every request).
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    return _JSON_SORTED.encode(value)


_DEFAULT_EXCLUDE = frozenset({"sign"})


def canonical(
    fields: Mapping[str, Any],
    *,
    exclude: frozenset[str] | set[str] = _DEFAULT_EXCLUDE,
    keep_empty: bool = False,
) -> str:
    """The string that is signed (see the module docstring); ``exclude`` names the
    signature field and any other field left out."""
    parts = []
    for key in sorted(fields):
        if key in exclude:
            continue
        value = fields[key]
        if value is None or (type(value) is str and value == ""):
            if keep_empty:
                parts.append(f"{key}=")
            continue
        parts.append(f"{key}={_text(value)}")
    return "&".join(parts)


# ---------------------------------------------------------------- keys


class KeyFormatError(ValueError):
    """A key that cannot be read; the message never contains key material."""


@dataclass(frozen=True)
class Sm2PrivateKey:
    """An SM2 private key: the 32-byte scalar and its uncompressed public point."""

    scalar: bytes = field(repr=False)
    public: bytes


@dataclass(frozen=True)
class Sm2PublicKey:
    """An SM2 public key as the uncompressed point ``04 || X || Y``."""

    point: bytes


PrivateKey = rsa.RSAPrivateKey | Sm2PrivateKey
PublicKey = rsa.RSAPublicKey | Sm2PublicKey


def read_key_text(value: str) -> str:
    """PEM text, a hex or bare base64 key as given, or else the content of the file named.

    ``env:NAME`` is resolved by the settings before this is called.
    """
    text = value.strip()
    if not text:
        raise KeyFormatError("is empty")
    if text.startswith("-----BEGIN") or (_HEX.match(text) and len(text) in (64, 66, 128, 130)):
        return text
    if "\n" not in text and len(text) < 1024:
        path = Path(text).expanduser()
        if path.is_file():
            try:
                return path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise KeyFormatError(f"cannot read key file {str(path)!r}: {exc}") from None
    if len(text) >= 128 and _BASE64.match(text):
        return text  # bare base64 DER, as Alipay's key tool writes keys
    if "\n" not in text and len(text) < 256:
        raise KeyFormatError(
            f"no such key file {text!r} (expected a file path, PEM text or 'env:NAME')"
        )
    raise KeyFormatError("is neither PEM text, a hex or base64 key, nor a file path")


def _der(text: str) -> bytes:
    """The DER bytes of PEM text or bare base64."""
    if text.startswith("-----BEGIN"):
        lines = [ln.strip() for ln in text.splitlines()]
        # the base64 lines only: no armour, no "Proc-Type:"-style headers
        body = "".join(ln for ln in lines if ln and not ln.startswith("-----") and ":" not in ln)
    else:
        body = "".join(text.split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError("is not valid base64 inside its PEM armour") from None


def _pem_label(text: str) -> str:
    m = re.match(r"-----BEGIN ([A-Z0-9 ]+)-----", text)
    return m.group(1) if m else ""


def _check_rsa_size(bits: int) -> None:
    if bits < MIN_RSA_BITS:
        raise KeyFormatError(f"is a {bits}-bit RSA key; RSA2 needs at least {MIN_RSA_BITS} bits")


@functools.lru_cache(maxsize=64)
def load_private_key(value: str, sign_type: str) -> PrivateKey:
    """Our private key for ``RSA2`` (PEM PKCS#1/PKCS#8 or bare base64 DER) or ``SM2``
    (PEM PKCS#8/SEC1 or 64 hex digits), parsed once (cached by text)."""
    text = read_key_text(value)
    if sign_type == "SM2":
        return _sm2_private(text)
    if sign_type != "RSA2":
        raise KeyFormatError(f"sign_type {sign_type} takes no private key")
    try:
        if text.startswith("-----BEGIN"):
            key: Any = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = serialization.load_der_private_key(_der(text), password=None)
    except TypeError:
        raise KeyFormatError("is encrypted; give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFormatError(
            "is not a readable RSA private key (PEM PKCS#1 or PKCS#8, or base64 DER)"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFormatError(f"is a {type(key).__name__}, not an RSA private key")
    _check_rsa_size(key.key_size)
    return key


@functools.lru_cache(maxsize=64)
def load_public_key(value: str, sign_type: str) -> PublicKey:
    """The vendor's public key for ``RSA2`` (PEM public key or certificate, or bare base64
    DER) or ``SM2`` (PEM public key or hex ``04||X||Y``), parsed once (cached by text)."""
    text = read_key_text(value)
    if sign_type == "SM2":
        return _sm2_public(text)
    if sign_type != "RSA2":
        raise KeyFormatError(f"sign_type {sign_type} takes no public key")
    try:
        if _pem_label(text) == "CERTIFICATE":
            key: Any = x509.load_pem_x509_certificate(text.encode()).public_key()
        elif text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(_der(text))
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFormatError(
            "is not a readable RSA public key (PEM, certificate, or base64 DER)"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyFormatError(f"is a {type(key).__name__}, not an RSA public key")
    _check_rsa_size(key.key_size)
    return key


# -- SM2 keys: cryptography cannot load the SM2 curve, so its few DER shapes are read here.


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, next position) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise KeyFormatError("is truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 3 or pos + count > len(data):
            raise KeyFormatError("has a bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise KeyFormatError("is truncated DER")
    return tag, data[pos : pos + length], pos + length


def _children(content: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(content):
        tag, value, pos = _tlv(content, pos)
        out.append((tag, value))
    return out


def _sm2_core() -> Any:
    return gmalg.SM2()


def _sm2_point(point: bytes) -> bytes:
    """The uncompressed form of a point on the SM2 curve (raises if it is not one)."""
    if len(point) == 64:
        point = b"\x04" + point
    if len(point) not in (33, 65) or point[0] not in (2, 3, 4):
        raise KeyFormatError("is not an SM2 public point (04||X||Y, 02/03||X or X||Y)")
    try:
        x, y = gmalg.sm2.bytes_to_point(point)
        full = b"\x04" + int(x).to_bytes(32, "big") + int(y).to_bytes(32, "big")
        valid = bool(_sm2_core().verify_pk(full))
    except Exception:  # gmalg's own errors for points off the curve
        valid = False
    if not valid:
        raise KeyFormatError("is not a point on the SM2 curve")
    return full


def _check_sm2_curve(algorithm: list[tuple[int, bytes]]) -> None:
    oids = [value for tag, value in algorithm if tag == 0x06]
    if _OID_SM2 not in oids:
        raise KeyFormatError("is an EC key on another curve, not SM2 (1.2.156.10197.1.301)")


def _sm2_private(text: str) -> Sm2PrivateKey:
    if _HEX.match(text) and len(text) == 64:
        scalar = bytes.fromhex(text)
    elif text.startswith("-----BEGIN"):
        label = _pem_label(text)
        der = _der(text)
        tag, content, _ = _tlv(der, 0)
        items = _children(content) if tag == 0x30 else []
        if label == "PRIVATE KEY" and len(items) >= 3 and items[1][0] == 0x30:
            _check_sm2_curve(_children(items[1][1]))
            tag, content, _ = _tlv(items[2][1], 0)  # ECPrivateKey inside the OCTET STRING
            items = _children(content) if tag == 0x30 else []
        elif label not in ("EC PRIVATE KEY", "SM2 PRIVATE KEY"):  # SEC1; OpenSSL 3 says SM2
            raise KeyFormatError(
                f"is a PEM {label or '?'}; SM2 needs PRIVATE KEY or EC/SM2 PRIVATE KEY"
            )
        octets = [value for tag, value in items if tag == 0x04]
        params = [value for tag, value in items if tag == 0xA0]
        if params:
            _check_sm2_curve(_children(params[0]))
        if not octets or len(octets[0]) > 32:
            raise KeyFormatError("is not an SM2 private key")
        scalar = octets[0].rjust(32, b"\x00")
    else:
        raise KeyFormatError("is not an SM2 private key (PEM, or 64 hex digits)")
    d = int.from_bytes(scalar, "big")
    if not 1 <= d <= _SM2_N - 2:
        raise KeyFormatError("is out of range for an SM2 private key")
    public = _sm2_core().generate_pk(scalar)
    return Sm2PrivateKey(scalar, _sm2_point(public))


def _sm2_public(text: str) -> Sm2PublicKey:
    if _HEX.match(text):
        return Sm2PublicKey(_sm2_point(bytes.fromhex(text)))
    if not text.startswith("-----BEGIN") or _pem_label(text) != "PUBLIC KEY":
        raise KeyFormatError("is not an SM2 public key (PEM PUBLIC KEY, or hex 04||X||Y)")
    tag, content, _ = _tlv(_der(text), 0)
    items = _children(content) if tag == 0x30 else []
    if len(items) != 2 or items[0][0] != 0x30 or items[1][0] != 0x03 or not items[1][1]:
        raise KeyFormatError("is not a SubjectPublicKeyInfo")
    _check_sm2_curve(_children(items[0][1]))
    return Sm2PublicKey(_sm2_point(items[1][1][1:]))  # skip the unused-bits byte


# ---------------------------------------------------------------- the signer


def sm3_digest(data: bytes) -> bytes:
    """SM3 (GB/T 32905) of ``data``: OpenSSL's through cryptography, else gmalg's."""
    try:
        digest = hashes.Hash(hashes.SM3())
    except UnsupportedAlgorithm:  # an OpenSSL built without SM3: the pure-Python one
        h = gmalg.SM3()
        h.update(data)
        return h.value()  # type: ignore[no-any-return]
    digest.update(data)
    return digest.finalize()


class Signer:
    """Signs and verifies one vendor's fields with one scheme and its options.

    Build it with keywords (``Signer(sign_type="MD5", secret=...)``) or from settings with
    :func:`signer_for`. Keys may be loaded key objects or the text
    :func:`load_private_key`/:func:`load_public_key` accept.
    """

    __slots__ = (
        "_digest",
        "_exclude",
        "_private",
        "_public",
        "_secret",
        "_sm2_ours",
        "_sm2_theirs",
        "_sm2_uid",
        "hex_case",
        "keep_empty",
        "sign_field",
        "sign_type",
        "sm2_user_id",
    )

    def __init__(
        self,
        *,
        sign_type: str = "HMAC-SHA256",
        secret: str | None = None,
        private_key: PrivateKey | str | None = None,
        public_key: PublicKey | str | None = None,
        exclude: Iterable[str] = (),
        keep_empty: bool = False,
        hex_case: HexCase | None = None,
        sign_field: str = "sign",
        sm2_user_id: str = DEFAULT_SM2_USER_ID,
    ) -> None:
        if sign_type not in SIGN_TYPES:
            raise ValueError(
                f"unknown sign_type {sign_type!r}; expected one of {', '.join(SIGN_TYPES)}"
            )
        if hex_case not in (None, "lower", "upper"):
            raise ValueError(f"hex_case: must be 'lower' or 'upper', got {hex_case!r}")
        if not sign_field:
            raise ValueError("sign_field: must not be empty")
        if isinstance(exclude, str):
            raise ValueError("exclude: a list of field names, not one string")
        self.sign_type = sign_type
        self.sign_field = sign_field
        self.keep_empty = keep_empty
        self.hex_case: HexCase | None = (
            None if sign_type in ASYMMETRIC else hex_case or DEFAULT_HEX_CASE[sign_type]
        )
        self.sm2_user_id = sm2_user_id
        self._exclude = frozenset({sign_field, *exclude})
        self._secret = b""
        self._private: Any = None
        self._public: Any = None
        self._sm2_ours = b""  # our public point X||Y (SM2 hashes it into what we sign)
        self._sm2_theirs = b""  # the vendor's public point X||Y
        self._sm2_uid = b""
        self._digest: Callable[[str], bytes]
        if sign_type in SYMMETRIC:
            if secret is None:  # (the settings also refuse an empty one)
                raise ValueError(f"secret: required for sign_type {sign_type}")
            self._secret = secret.encode()
            self._digest = {
                "HMAC-SHA256": self._hmac_sha256,
                "MD5": self._md5,
                "WECHAT-HMAC-SHA256": self._wechat_hmac_sha256,
                "SM3": self._sm3,
            }[sign_type]
            return
        self._load_keys(private_key, public_key)

    def _load_keys(self, private_key: PrivateKey | str | None, public_key: Any) -> None:
        sign_type = self.sign_type
        if private_key is None:
            raise ValueError(f"private_key: required for sign_type {sign_type}")
        if public_key is None:
            raise ValueError(f"vendor_public_key: required for sign_type {sign_type}")
        if isinstance(private_key, str):
            try:
                private_key = load_private_key(private_key, sign_type)
            except KeyFormatError as exc:
                raise ValueError(f"private_key: {exc}") from None
        if isinstance(public_key, str):
            try:
                public_key = load_public_key(public_key, sign_type)
            except KeyFormatError as exc:
                raise ValueError(f"vendor_public_key: {exc}") from None
        if sign_type == "RSA2":
            if not isinstance(private_key, rsa.RSAPrivateKey):
                raise ValueError("private_key: RSA2 needs an RSA private key")
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise ValueError("vendor_public_key: RSA2 needs an RSA public key")
        else:
            if not isinstance(private_key, Sm2PrivateKey):
                raise ValueError("private_key: SM2 needs an SM2 private key")
            if not isinstance(public_key, Sm2PublicKey):
                raise ValueError("vendor_public_key: SM2 needs an SM2 public key")
            uid = self.sm2_user_id.encode()
            if not uid or len(uid) >= 8192:
                raise ValueError("sm2_user_id: must be 1 to 8191 bytes")
            self._sm2_ours = private_key.public[1:]
            self._sm2_theirs = public_key.point[1:]
            self._sm2_uid = uid
        self._private = private_key
        self._public = public_key

    def __repr__(self) -> str:
        return (
            f"Signer(sign_type={self.sign_type!r}, sign_field={self.sign_field!r}, "
            f"exclude={sorted(self._exclude - {self.sign_field})!r}, "
            f"keep_empty={self.keep_empty!r}, hex_case={self.hex_case!r})"
        )

    @property
    def exclude(self) -> frozenset[str]:
        """Every field left out of the canonical string, the signature field included."""
        return self._exclude

    # -- the symmetric digests, hex case applied by sign()

    def _hmac_sha256(self, text: str) -> bytes:
        return hmac.digest(self._secret, text.encode(), "sha256")

    def _md5(self, text: str) -> bytes:
        return hashlib.md5(text.encode() + b"&key=" + self._secret).digest()

    def _wechat_hmac_sha256(self, text: str) -> bytes:
        return hmac.digest(self._secret, text.encode() + b"&key=" + self._secret, "sha256")

    def _sm3(self, text: str) -> bytes:
        return sm3_digest(text.encode() + b"&key=" + self._secret)

    # -- the interface

    def canonical(self, fields: Mapping[str, Any]) -> str:
        return canonical(fields, exclude=self._exclude, keep_empty=self.keep_empty)

    def sign(self, fields: Mapping[str, Any]) -> str:
        """The signature of ``fields`` (its own signature field, if any, is left out)."""
        text = self.canonical(fields)
        if self.hex_case is not None:
            digest = self._digest(text).hex()
            return digest.upper() if self.hex_case == "upper" else digest
        if self.sign_type == "RSA2":
            raw = self._private.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
        else:
            raw = gmssl_pyx.sm2_sign(
                self._private.scalar, self._sm2_ours, text.encode(), signer_id=self._sm2_uid
            )
        return base64.b64encode(raw).decode("ascii")

    def verify(self, fields: Mapping[str, Any], signature: Any) -> bool:
        """True if ``signature`` is the signature of ``fields``; False for anything else."""
        try:
            if not isinstance(signature, str) or not signature:
                return False
            text = self.canonical(fields)
            if self.hex_case is not None:
                expected = self._digest(text).hex()
                if self.hex_case == "upper":
                    expected = expected.upper()
                return hmac.compare_digest(signature.encode(), expected.encode())
            raw = base64.b64decode(signature, validate=True)
            if self.sign_type == "RSA2":
                self._public.verify(raw, text.encode(), padding.PKCS1v15(), hashes.SHA256())
                return True
            return self._verify_sm2(text.encode(), raw)
        except InvalidSignature:
            return False
        except Exception:  # junk of any kind is a bad signature, never an exception
            return False

    def verify_fields(self, fields: Mapping[str, Any]) -> bool:
        """True if ``fields[sign_field]`` is the signature of the other fields."""
        return self.verify(fields, fields.get(self.sign_field))

    def _verify_sm2(self, message: bytes, raw: bytes) -> bool:
        if len(raw) == 64 and raw[0] != 0x30:  # raw r || s
            r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        else:
            r, s = decode_dss_signature(raw)
            if encode_dss_signature(r, s) != raw:  # trailing junk, non-minimal DER
                return False
        if not (1 <= r < _SM2_N and 1 <= s < _SM2_N):
            return False
        der = encode_dss_signature(r, s)
        return bool(gmssl_pyx.sm2_verify(self._sm2_theirs, message, der, signer_id=self._sm2_uid))


def signer_for(cfg: VendorSettings) -> Signer:
    """The signer of one vendor's settings (keys were parsed when the settings were)."""
    secret = cfg.secret.get_secret_value() if cfg.secret is not None else None
    private = cfg.private_key.get_secret_value() if cfg.private_key is not None else None
    public = cfg.vendor_public_key.get_secret_value() if cfg.vendor_public_key is not None else None
    return Signer(
        sign_type=cfg.sign_type,
        secret=secret,
        private_key=private,
        public_key=public,
        exclude=cfg.sign_exclude,
        keep_empty=cfg.sign_keep_empty,
        hex_case=cfg.sign_hex_case,
        sign_field=cfg.sign_field,
        sm2_user_id=cfg.sm2_user_id,
    )


# ---------------------------------------------------------------- the DESIGN §5 functions


@functools.lru_cache(maxsize=256)
def _shared_secret_signer(secret: str, sign_type: str) -> Signer:
    if sign_type not in SYMMETRIC:
        raise ValueError(
            f"unknown sign_type {sign_type!r} for a shared secret; expected one of "
            f"{', '.join(SIGN_TYPES)} (RSA2 and SM2 need keys: use Signer)"
        )
    return Signer(sign_type=sign_type, secret=secret)


def sign(fields: Mapping[str, Any], secret: str, sign_type: str = "HMAC-SHA256") -> str:
    """The signature of ``fields`` with a shared secret and the default options."""
    return _shared_secret_signer(secret, sign_type).sign(fields)


def verify(fields: Mapping[str, Any], secret: str, sign_type: str = "HMAC-SHA256") -> bool:
    """True if ``fields["sign"]`` is the signature of the other fields (constant time)."""
    return _shared_secret_signer(secret, sign_type).verify_fields(fields)


__all__ = [
    "ASYMMETRIC",
    "DEFAULT_HEX_CASE",
    "DEFAULT_SM2_USER_ID",
    "SIGN_TYPES",
    "SYMMETRIC",
    "HexCase",
    "KeyFormatError",
    "PrivateKey",
    "PublicKey",
    "SignType",
    "Signer",
    "Sm2PrivateKey",
    "Sm2PublicKey",
    "canonical",
    "load_private_key",
    "load_public_key",
    "read_key_text",
    "sign",
    "signer_for",
    "sm3_digest",
    "verify",
]
