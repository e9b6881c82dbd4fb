"""Every ``sign_type`` against its vectors, both directions, every option, and the keys.

The vectors in ``vectors/schemes.json`` were computed with the ``openssl`` command by
``vectors/make_schemes.py`` (see its docstring), not by orderwatch; the WeChat Pay v2
figures are the ones its documentation publishes and GB/T 32905's SM3 examples are the
standard's. "Both directions" pairs a merchant-side signer (our private key, the vendor's
public key) with a vendor-side one (the vendor's private key, our public key), the way the
reference adapter and the simulator are paired.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orderwatch.clock import ManualClock
from orderwatch.errors import ConfigError
from orderwatch.outcomes import Abnormal, InProgress
from orderwatch.settings import DEFAULT_STATUS_MAP, VendorSettings, effective_lines, load_settings
from orderwatch.vendors import signing
from orderwatch.vendors.reference import ReferenceAdapter, interpret

VECTORS = Path(__file__).resolve().parent / "vectors"
DATA: dict[str, Any] = json.loads((VECTORS / "schemes.json").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = DATA["cases"]
WECHAT = CASES[0]
SYMMETRIC = ("HMAC-SHA256", "MD5", "WECHAT-HMAC-SHA256", "SM3")
ASYMMETRIC = ("RSA2", "SM2")


def key(name: str) -> str:
    return str(VECTORS / name)


def signer(sign_type: str, private: str, public: str, **options: Any) -> signing.Signer:
    """A signer with ``private``'s private key and ``public``'s public key (or the secret)."""
    if sign_type in SYMMETRIC:
        return signing.Signer(sign_type=sign_type, secret=options.pop("secret", "s"), **options)
    kind = "rsa" if sign_type == "RSA2" else "sm2"
    return signing.Signer(
        sign_type=sign_type,
        private_key=key(f"{kind}_{private}.pem"),
        public_key=key(f"{kind}_{public}.pub.pem"),
        **options,
    )


def merchant(sign_type: str, **options: Any) -> signing.Signer:
    """Our side: signs with our private key, verifies with the vendor's public key."""
    return signer(sign_type, "merchant", "vendor", **options)


def vendor(sign_type: str, **options: Any) -> signing.Signer:
    """The vendor's side: its private key, our public key."""
    return signer(sign_type, "vendor", "merchant", **options)


def self_pair(sign_type: str, **options: Any) -> signing.Signer:
    """One key pair on both ends: verifies what it signs (the vectors' merchant key)."""
    return signer(sign_type, "merchant", "merchant", **options)


# -------------------------------------------------------------------- the published vectors


def test_every_sign_type_is_known_to_settings_and_to_the_signer() -> None:
    annotation = VendorSettings.model_fields["sign_type"].annotation
    assert set(get_args(annotation)) == set(signing.SIGN_TYPES)
    assert set(signing.SIGN_TYPES) == set(SYMMETRIC) | set(ASYMMETRIC)
    assert VendorSettings.model_fields["sm2_user_id"].default == signing.DEFAULT_SM2_USER_ID


def test_wechat_pay_v2_official_example() -> None:
    # The figures WeChat Pay's v2 documentation prints for its example (安全规范 → 签名算法).
    fields, secret = WECHAT["fields"], WECHAT["secret"]
    assert secret == "192006250b4c09247ec02edce69f6a2d"
    md5 = signing.Signer(sign_type="MD5", secret=secret)
    wechat_hmac = signing.Signer(sign_type="WECHAT-HMAC-SHA256", secret=secret)

    assert md5.canonical(fields) == (
        "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100"
        "&nonce_str=ibuaiVcKdpRxkhJA"
    )
    assert md5.sign(fields) == "9A0A8659F005D6984697E2CA0A9CF3B7"
    assert wechat_hmac.sign(fields) == (
        "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    )
    assert signing.sign(fields, secret, "MD5") == "9A0A8659F005D6984697E2CA0A9CF3B7"


@pytest.mark.parametrize("vector", DATA["sm3_standard"], ids=["abc", "abcd*16"])
def test_sm3_standard_vectors(vector: dict[str, str]) -> None:
    assert signing.sm3_digest(vector["message"].encode()).hex() == vector["digest"]


def test_sm3_without_openssl_support_falls_back_to_pure_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryptography.exceptions import UnsupportedAlgorithm

    def unsupported(*_: Any) -> None:
        raise UnsupportedAlgorithm("no SM3 here")

    monkeypatch.setattr(signing.hashes, "Hash", unsupported)
    for vector in DATA["sm3_standard"]:
        assert signing.sm3_digest(vector["message"].encode()).hex() == vector["digest"]


@pytest.fixture(params=CASES, ids=["wechat", "place-order"])
def case(request: pytest.FixtureRequest) -> dict[str, Any]:
    return request.param  # type: ignore[no-any-return]


def test_canonical_string(case: dict[str, Any]) -> None:
    assert signing.canonical(case["fields"]) == case["canonical"]
    for sign_type in signing.SIGN_TYPES:
        assert self_pair(sign_type).canonical(case["fields"]) == case["canonical"]


@pytest.mark.parametrize("sign_type", SYMMETRIC)
def test_symmetric_signature_matches_openssl(case: dict[str, Any], sign_type: str) -> None:
    signer = signing.Signer(sign_type=sign_type, secret=case["secret"])
    assert signer.sign(case["fields"]) == case[sign_type]
    assert signer.verify(case["fields"], case[sign_type])


def test_rsa2_signature_is_openssls_byte_for_byte(case: dict[str, Any]) -> None:
    # PKCS#1 v1.5 is deterministic: the same key and text give openssl's signature.
    signer = self_pair("RSA2")
    assert signer.sign(case["fields"]) == case["RSA2"]
    assert signer.verify(case["fields"], case["RSA2"])


def test_sm2_signature_made_by_openssl_verifies(case: dict[str, Any]) -> None:
    assert self_pair("SM2").verify(case["fields"], case["SM2"])


def test_sm2_signatures_are_randomised_and_each_verifies(case: dict[str, Any]) -> None:
    signer = self_pair("SM2")
    first, second = signer.sign(case["fields"]), signer.sign(case["fields"])
    assert first != second
    assert signer.verify(case["fields"], first)
    assert signer.verify(case["fields"], second)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
@pytest.mark.parametrize("sign_type", ASYMMETRIC)
def test_openssl_verifies_our_signature(tmp_path: Path, sign_type: str) -> None:
    fields = CASES[1]["fields"]
    signature = self_pair(sign_type).sign(fields)
    (tmp_path / "sig").write_bytes(base64.b64decode(signature))
    (tmp_path / "msg").write_text(CASES[1]["canonical"], encoding="utf-8")
    kind = "rsa" if sign_type == "RSA2" else "sm2"
    command = ["openssl", "dgst", "-sha256" if kind == "rsa" else "-sm3"]
    if kind == "sm2":
        command += ["-sigopt", "distid:1234567812345678"]
    command += ["-verify", key(f"{kind}_merchant.pub.pem"), "-signature", str(tmp_path / "sig")]
    result = subprocess.run(
        [*command, str(tmp_path / "msg")], capture_output=True, text=True, check=False
    )
    if kind == "sm2" and "distid" in result.stderr:
        pytest.skip(f"this openssl cannot verify SM2: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert "Verified OK" in result.stdout


def test_sm2_user_id_is_part_of_the_signature() -> None:
    vector = DATA["sm2_user_id"]
    fields = WECHAT["fields"]
    custom = self_pair("SM2", sm2_user_id=vector["user_id"])

    assert custom.verify(fields, vector["SM2"])
    assert not self_pair("SM2").verify(fields, vector["SM2"])
    assert not custom.verify(fields, WECHAT["SM2"])
    assert self_pair("SM2").verify(fields, WECHAT["SM2"])


# -------------------------------------------------------------------- both directions


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_the_vendor_verifies_what_we_sign(sign_type: str) -> None:
    fields = CASES[1]["fields"]
    signature = merchant(sign_type).sign(fields)
    assert vendor(sign_type).verify(fields, signature)
    assert not vendor(sign_type).verify({**fields, "points": 12001}, signature)


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_we_verify_what_the_vendor_signs(sign_type: str) -> None:
    answer = {"code": "0000", "message": "ok", "data": {"status": "DELIVERED"}}
    signature = vendor(sign_type).sign(answer)
    assert merchant(sign_type).verify(answer, signature)
    tampered = {**answer, "data": {"status": "FAILED"}}
    assert not merchant(sign_type).verify(tampered, signature)


@pytest.mark.parametrize("sign_type", ASYMMETRIC)
def test_a_signature_with_our_own_key_is_not_the_vendors(sign_type: str) -> None:
    # Our answer to ourselves must not pass as the vendor's: the keys are not symmetric.
    answer = {"code": "0000", "message": "ok"}
    assert not merchant(sign_type).verify(answer, merchant(sign_type).sign(answer))


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_a_tampered_field_an_added_field_and_a_dropped_field_are_rejected(sign_type: str) -> None:
    signer = self_pair(sign_type)
    fields = dict(CASES[1]["fields"])
    signature = signer.sign(fields)
    assert signer.verify(fields, signature)
    assert not signer.verify({**fields, "sku": "SKU-1002"}, signature)
    assert not signer.verify({**fields, "extra": "1"}, signature)
    assert not signer.verify({k: v for k, v in fields.items() if k != "sku"}, signature)
    # empty values are not signed, so adding one changes nothing (WeChat's rule)
    assert signer.verify({**fields, "blank": "", "none": None}, signature)


@pytest.mark.parametrize("sign_type", SYMMETRIC)
def test_symmetric_schemes_reject_another_secret(sign_type: str) -> None:
    fields = CASES[1]["fields"]
    signature = signing.Signer(sign_type=sign_type, secret="one").sign(fields)
    assert not signing.Signer(sign_type=sign_type, secret="two").verify(fields, signature)


@pytest.mark.parametrize("sign_type", SYMMETRIC)
def test_every_scheme_differs_from_every_other(sign_type: str) -> None:
    fields = CASES[1]["fields"]
    signature = signing.Signer(sign_type=sign_type, secret="s").sign(fields)
    for other in SYMMETRIC:
        if other != sign_type:
            assert not signing.Signer(sign_type=other, secret="s").verify(fields, signature)


# -------------------------------------------------------------------- the options


OPTIONS = DATA["options"]


def test_option_exclude_leaves_fields_out() -> None:
    fields = OPTIONS["fields"]
    plain = signing.Signer(sign_type="HMAC-SHA256", secret=OPTIONS["secret"])
    excluding = signing.Signer(
        sign_type="HMAC-SHA256", secret=OPTIONS["secret"], exclude=["sign_type"]
    )

    assert plain.canonical(fields) == OPTIONS["default"]
    assert excluding.canonical(fields) == OPTIONS["exclude_sign_type"]
    assert plain.sign(fields) == OPTIONS["HMAC-SHA256 default"]
    assert excluding.sign(fields) == OPTIONS["HMAC-SHA256 exclude_sign_type"]
    # an excluded field may change without breaking the signature
    signature = excluding.sign(fields)
    assert excluding.verify({**fields, "sign_type": "SM2"}, signature)
    assert not plain.verify({**fields, "sign_type": "SM2"}, plain.sign(fields))


def test_option_exclude_with_rsa2_matches_openssl() -> None:
    signer = self_pair("RSA2", exclude=["sign_type"])
    assert signer.sign(OPTIONS["fields"]) == OPTIONS["RSA2 exclude_sign_type"]


def test_option_keep_empty_writes_key_equals_nothing() -> None:
    fields = OPTIONS["fields"]
    keeping = signing.Signer(sign_type="HMAC-SHA256", secret=OPTIONS["secret"], keep_empty=True)

    assert keeping.canonical(fields) == OPTIONS["keep_empty"]
    assert keeping.sign(fields) == OPTIONS["HMAC-SHA256 keep_empty"]
    # kept empties are signed: adding or dropping one now breaks the signature
    signature = keeping.sign(fields)
    assert not keeping.verify({**fields, "z": ""}, signature)
    assert not keeping.verify({k: v for k, v in fields.items() if k != "a"}, signature)


@pytest.mark.parametrize(
    ("sign_type", "default"),
    [("HMAC-SHA256", "lower"), ("MD5", "upper"), ("WECHAT-HMAC-SHA256", "upper"), ("SM3", "lower")],
)
def test_option_hex_case(sign_type: str, default: str) -> None:
    fields, secret, expected = WECHAT["fields"], WECHAT["secret"], WECHAT[sign_type]
    default_signer = signing.Signer(sign_type=sign_type, secret=secret)
    lower = signing.Signer(sign_type=sign_type, secret=secret, hex_case="lower")
    upper = signing.Signer(sign_type=sign_type, secret=secret, hex_case="upper")

    assert default_signer.hex_case == default
    assert lower.sign(fields) == expected.lower()
    assert upper.sign(fields) == expected.upper()
    # the case is part of the signature: the vendor's case, exactly
    assert lower.verify(fields, expected.lower())
    assert not lower.verify(fields, expected.upper())
    assert not upper.verify(fields, expected.lower())


@pytest.mark.parametrize("sign_type", ASYMMETRIC)
def test_option_hex_case_is_ignored_by_base64_schemes(sign_type: str) -> None:
    signer = self_pair(sign_type, hex_case="upper")
    assert signer.hex_case is None
    signature = signer.sign(WECHAT["fields"])
    base64.b64decode(signature, validate=True)
    assert signer.verify(WECHAT["fields"], signature)


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_option_sign_field_is_left_out_and_read_by_verify_fields(sign_type: str) -> None:
    signer = self_pair(sign_type, sign_field="signature")
    fields: dict[str, Any] = {"a": "1", "sign": "a field like any other"}
    fields["signature"] = signer.sign(fields)

    assert signer.canonical(fields) == "a=1&sign=a field like any other"
    assert signer.verify_fields(fields)
    assert not signer.verify_fields({**fields, "sign": "changed"})
    assert not signer.verify_fields({k: v for k, v in fields.items() if k != "signature"})


# -------------------------------------------------------------------- verify never raises


class Unwritable:
    pass


JUNK_SIGNATURES: list[Any] = [
    None,
    123,
    b"bytes",
    "",
    " ",
    "签名",
    "zz" * 32,
    "not base64!!",
    base64.b64encode(b"\x30\x06\x02\x01\x01\x02\x01\x01").decode(),  # r = s = 1
    base64.b64encode(b"\x00" * 64).decode(),
    base64.b64encode(b"\x30" + b"\xff" * 70).decode(),
    "A" * 100_000,
]


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_verify_returns_false_for_junk_signatures(sign_type: str) -> None:
    signer = self_pair(sign_type)
    for junk in JUNK_SIGNATURES:
        assert signer.verify(WECHAT["fields"], junk) is False, junk


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_verify_returns_false_for_fields_it_cannot_write(sign_type: str) -> None:
    signer = self_pair(sign_type)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    for fields in ({"a": Unwritable()}, {"a": deep}, {"a": float("nan"), "b": {1, 2}}):
        assert signer.verify(fields, "0" * 64) is False


def test_sm2_verify_accepts_raw_r_s_and_rejects_padded_der() -> None:
    signer = self_pair("SM2")
    fields = WECHAT["fields"]
    der = base64.b64decode(signer.sign(fields))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert signer.verify(fields, base64.b64encode(raw).decode())
    assert not signer.verify(fields, base64.b64encode(der + b"\x00").decode())


# -------------------------------------------------------------------- construction errors


def test_a_signer_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="secret: required for sign_type MD5"):
        signing.Signer(sign_type="MD5")
    with pytest.raises(ValueError, match="private_key: required for sign_type RSA2"):
        signing.Signer(sign_type="RSA2", public_key=key("rsa_vendor.pub.pem"))
    with pytest.raises(ValueError, match="vendor_public_key: required for sign_type SM2"):
        signing.Signer(sign_type="SM2", private_key=key("sm2_merchant.pem"))
    with pytest.raises(ValueError, match="HMAC-SHA256, MD5, WECHAT-HMAC-SHA256, RSA2, SM3, SM2"):
        signing.Signer(sign_type="SHA1", secret="s")
    with pytest.raises(ValueError, match="hex_case"):
        signing.Signer(secret="s", hex_case="mixed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exclude"):
        signing.Signer(secret="s", exclude="sign_type")


def test_the_shared_secret_functions_refuse_the_key_schemes() -> None:
    with pytest.raises(ValueError, match="RSA2 and SM2 need keys"):
        signing.sign({"a": "1"}, "s", "RSA2")


@pytest.mark.parametrize(
    ("sign_type", "private", "public", "message"),
    [
        ("RSA2", "sm2_merchant.pem", "rsa_vendor.pub.pem", "private_key: is not a readable RSA"),
        ("RSA2", "rsa_merchant.pem", "sm2_vendor.pub.pem", "vendor_public_key: is not a readable"),
        (
            "SM2",
            "rsa_merchant.pem",
            "sm2_vendor.pub.pem",
            "private_key: is a PEM PRIVATE KEY|is an",
        ),
        ("SM2", "sm2_merchant.pem", "rsa_vendor.pub.pem", "vendor_public_key: is an EC key|not"),
        ("RSA2", "no-such.pem", "rsa_vendor.pub.pem", "private_key: no such key file"),
    ],
)
def test_wrong_keys_are_clear_errors(
    sign_type: str, private: str, public: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        signing.Signer(sign_type=sign_type, private_key=key(private), public_key=key(public))


# -------------------------------------------------------------------- key forms


def sm2_hex_keys() -> tuple[str, str]:
    """The merchant SM2 key pair as hex, as Chinese SDKs print them."""
    loaded = signing.load_private_key(key("sm2_merchant.pem"), "SM2")
    assert isinstance(loaded, signing.Sm2PrivateKey)
    return loaded.scalar.hex(), loaded.public.hex()


def test_sm2_keys_as_hex_sign_like_the_pem_ones() -> None:
    private_hex, public_hex = sm2_hex_keys()
    assert len(private_hex) == 64
    assert public_hex.startswith("04")
    assert len(public_hex) == 130
    by_hex = signing.Signer(sign_type="SM2", private_key=private_hex, public_key=public_hex)
    # openssl's signature, verified with the hex form of the key
    assert by_hex.verify(WECHAT["fields"], WECHAT["SM2"])
    # X||Y without the 04 prefix is the same key
    bare = signing.Signer(sign_type="SM2", private_key=private_hex, public_key=public_hex[2:])
    assert bare.verify(WECHAT["fields"], by_hex.sign(WECHAT["fields"]))


def test_sm2_public_key_off_the_curve_is_refused() -> None:
    _, public_hex = sm2_hex_keys()
    off = public_hex[:-2] + ("00" if public_hex[-2:] != "00" else "01")
    with pytest.raises(signing.KeyFormatError, match="not a point on the SM2 curve"):
        signing.load_public_key(off, "SM2")


def test_sec1_sm2_private_key_is_read(tmp_path: Path) -> None:
    private_hex, _ = sm2_hex_keys()
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    sec1 = tmp_path / "sec1.pem"
    result = subprocess.run(
        ["openssl", "ec", "-in", key("sm2_merchant.pem"), "-out", str(sec1)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip("this openssl cannot write SM2 keys as SEC1")
    assert re.search(r"BEGIN (EC|SM2) PRIVATE KEY", sec1.read_text())  # OpenSSL 3 says SM2
    loaded = signing.load_private_key(str(sec1), "SM2")
    assert isinstance(loaded, signing.Sm2PrivateKey)
    assert loaded.scalar.hex() == private_hex


def test_rsa_keys_as_bare_base64_like_alipay_writes_them() -> None:
    text = (VECTORS / "rsa_merchant.pem").read_text()
    bare = "".join(line for line in text.splitlines() if not line.startswith("-----"))
    public = (VECTORS / "rsa_merchant.pub.pem").read_text()
    bare_public = "".join(line for line in public.splitlines() if not line.startswith("-----"))
    signer = signing.Signer(sign_type="RSA2", private_key=bare, public_key=bare_public)
    assert signer.sign(WECHAT["fields"]) == WECHAT["RSA2"]


def test_short_rsa_keys_and_other_key_types_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(signing.KeyFormatError, match="1024-bit RSA key; RSA2 needs at least 2048"):
        signing.load_private_key(pem, "RSA2")
    p256 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(signing.KeyFormatError, match="not an RSA private key"):
        signing.load_private_key(p256.decode(), "RSA2")
    with pytest.raises(signing.KeyFormatError, match="another curve, not SM2"):
        signing.load_private_key(p256.decode(), "SM2")


def test_an_encrypted_key_is_refused_without_showing_it() -> None:
    loaded = serialization.load_pem_private_key(
        (VECTORS / "rsa_merchant.pem").read_bytes(), password=None
    )
    encrypted = loaded.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pass"),
    ).decode()
    with pytest.raises(signing.KeyFormatError, match="encrypted") as info:
        signing.load_private_key(encrypted, "RSA2")
    assert encrypted[40:80] not in str(info.value)


# -------------------------------------------------------------------- settings


def write_config(tmp_path: Path, vendor_lines: str) -> Path:
    path = tmp_path / "orderwatch.toml"
    path.write_text(
        "[vendors.acme]\nbase_url = 'http://acme.test'\nmerchant_id = 'M0001'\n" + vendor_lines,
        encoding="utf-8",
    )
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env or {})
    return str(info.value)


def test_settings_rsa2_from_files_and_secret_optional(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"sign_type = 'RSA2'\nprivate_key = '{key('rsa_merchant.pem')}'\n"
        f"vendor_public_key = '{key('rsa_vendor.pub.pem')}'\n",
    )
    cfg = load_settings(path, env={}).settings.vendors["acme"]
    assert cfg.secret is None
    assert cfg.private_key is not None
    assert cfg.private_key.get_secret_value().startswith("-----BEGIN PRIVATE KEY-----")
    signature = signing.signer_for(cfg).sign(WECHAT["fields"])
    assert signature == WECHAT["RSA2"]
    assert vendor("RSA2").verify(WECHAT["fields"], signature)


def test_settings_keys_from_env_and_masked_in_config_show(tmp_path: Path) -> None:
    pem = (VECTORS / "sm2_merchant.pem").read_text()
    path = write_config(
        tmp_path,
        "sign_type = 'SM2'\nsecret = 'still-valid'\nprivate_key = 'env:OW_SM2_KEY'\n"
        f"vendor_public_key = '{key('sm2_vendor.pub.pem')}'\nsm2_user_id = 'ALICE123@YAHOO.COM'\n",
    )
    loaded = load_settings(path, env={"OW_SM2_KEY": pem})
    cfg = loaded.settings.vendors["acme"]
    signer = signing.signer_for(cfg)
    assert signer.sm2_user_id == "ALICE123@YAHOO.COM"
    shown = {k: v for k, v, _ in effective_lines(loaded)}
    assert shown["vendors.acme.private_key"] == "***"
    assert shown["vendors.acme.vendor_public_key"] == "***"
    assert pem.splitlines()[1] not in json.dumps(shown)


@pytest.mark.parametrize("sign_type", ["RSA2", "SM2"])
def test_settings_without_private_key_name_the_key(tmp_path: Path, sign_type: str) -> None:
    path = write_config(tmp_path, f"sign_type = '{sign_type}'\nsecret = 'x'\n")
    text = problems(path)
    lines = text.splitlines()
    private = next(line for line in lines if "vendors.acme.private_key (" in line)
    public = next(line for line in lines if "vendors.acme.vendor_public_key (" in line)
    assert f"): required for sign_type {sign_type}: our private key as PEM text" in private
    assert f"): required for sign_type {sign_type}: the vendor's key" in public


def test_settings_bad_pem_names_the_field_and_hides_the_key(tmp_path: Path) -> None:
    garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    path = write_config(
        tmp_path,
        "sign_type = 'RSA2'\nprivate_key = 'env:OW_KEY'\n"
        f"vendor_public_key = '{key('rsa_vendor.pub.pem')}'\n",
    )
    text = problems(path, {"OW_KEY": garbage})
    assert "vendors.acme.private_key (file " in text
    assert "our private key for RSA2 is not a readable RSA private key" in text
    assert "bm90IGEga2V5" not in text


def test_settings_missing_key_file_and_unset_env(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "sign_type = 'SM2'\nprivate_key = 'keys/nope.pem'\nvendor_public_key = 'env:OW_NOPE'\n",
    )
    text = problems(path)
    assert "vendors.acme.private_key (file " in text
    assert "no such key file 'keys/nope.pem'" in text
    assert "vendors.acme.vendor_public_key (file " in text
    assert "OW_NOPE" in text


def test_settings_secret_still_required_for_the_symmetric_schemes(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sign_type = 'WECHAT-HMAC-SHA256'\n")
    assert "vendors.acme.secret (file " in problems(path)
    assert "required key is missing" in problems(path)
    path = write_config(tmp_path, "sign_type = 'SM3'\nsecret = ''\n")
    assert "must not be empty for sign_type SM3" in problems(path)


def test_settings_key_with_a_symmetric_scheme_is_a_mistake(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"secret = 's'\nprivate_key = '{key('rsa_merchant.pem')}'\n")
    assert "vendors.acme.private_key (file " in problems(path)
    assert "only used by sign_type RSA2 or SM2, not HMAC-SHA256" in problems(path)


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ("sign_hex_case = 'mixed'", "sign_hex_case", "'lower' or 'upper'"),
        ("sign_location = 'query'", "sign_location", "'body' or 'header'"),
        ("sign_header = 'X Sign'", "sign_header", "is not an HTTP header name"),
        ("sign_field = ''", "sign_field", "at least 1 character"),
        ("sign_exclude = ['a', '']", "sign_exclude", "field names must not be empty"),
        ("sign_keep_empty = 'perhaps'", "sign_keep_empty", "valid boolean"),
        ("sm2_user_id = ''", "sm2_user_id", "at least 1 character"),
    ],
)
def test_settings_bad_options_name_the_field(
    tmp_path: Path, line: str, field: str, message: str
) -> None:
    text = problems(write_config(tmp_path, f"secret = 's'\n{line}\n"))
    assert f"vendors.acme.{field} (file " in text
    assert message in text


def test_settings_options_reach_the_signer(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "secret = 'opt-secret'\nsign_exclude = ['sign_type']\nsign_keep_empty = true\n"
        "sign_hex_case = 'upper'\nsign_field = 'signature'\nsign_location = 'header'\n"
        "sign_header = 'X-Sign'\n",
    )
    cfg = load_settings(path, env={}).settings.vendors["acme"]
    signer = signing.signer_for(cfg)
    assert signer.exclude == {"signature", "sign_type"}
    assert signer.keep_empty
    assert signer.hex_case == "upper"
    assert signer.sign_field == "signature"
    assert (cfg.sign_location, cfg.sign_header) == ("header", "X-Sign")
    assert signer.canonical(OPTIONS["fields"]) == "a=&b=2&c=&d=x y"


def test_settings_exclude_from_an_environment_variable(tmp_path: Path) -> None:
    path = write_config(tmp_path, "secret = 's'\n")
    loaded = load_settings(path, env={"ORDERWATCH_VENDORS__ACME__SIGN_EXCLUDE": "a, b"})
    assert loaded.settings.vendors["acme"].sign_exclude == ["a", "b"]


# -------------------------------------------------------------------- the reference adapter


def adapter_settings(sign_type: str, **options: Any) -> VendorSettings:
    data: dict[str, Any] = {"base_url": "http://acme.test", "merchant_id": "M0001"}
    if sign_type in SYMMETRIC:
        data["secret"] = "s"
    else:
        kind = "rsa" if sign_type == "RSA2" else "sm2"
        data["private_key"] = key(f"{kind}_merchant.pem")
        data["vendor_public_key"] = key(f"{kind}_vendor.pub.pem")
    return VendorSettings.model_validate({**data, "sign_type": sign_type, **options})


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_adapter_puts_the_signature_in_the_body_field(sign_type: str) -> None:
    adapter = ReferenceAdapter(
        "acme", adapter_settings(sign_type, sign_field="signature"), clock=ManualClock()
    )
    raw, headers = adapter._signed({"merchant_id": "M0001", "order_no": "R-1"})
    body = json.loads(raw)

    assert "X-Signature" not in headers
    assert "sign" not in body
    assert vendor(sign_type, sign_field="signature").verify_fields(body)


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_adapter_puts_the_signature_in_the_header(sign_type: str) -> None:
    cfg = adapter_settings(sign_type, sign_location="header", sign_header="X-Sign")
    adapter = ReferenceAdapter("acme", cfg, clock=ManualClock())
    raw, headers = adapter._signed({"merchant_id": "M0001", "order_no": "R-1"})
    body = json.loads(raw)

    assert "sign" not in body
    assert headers["Content-Type"].startswith("application/json")
    assert vendor(sign_type).verify(body, headers["X-Sign"])
    assert not vendor(sign_type).verify({**body, "order_no": "R-2"}, headers["X-Sign"])


QUERY_ANSWER = {
    "code": "0000",
    "message": "ok",
    "data": {"order_no": "R-1", "status": "SHIPPED", "description": "运输中"},
}


def run_interpret(cfg: VendorSettings, body: dict[str, Any], header: str | None) -> Any:
    outcome, _ = interpret(
        "query",
        http_status=200,
        body=json.dumps(body, ensure_ascii=False).encode(),
        retry_after=None,
        status_map=DEFAULT_STATUS_MAP,
        signer=signing.signer_for(cfg),
        sign_location=cfg.sign_location,
        header_signature=header,
    )
    return outcome


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_interpret_trusts_a_vendor_signature_in_the_body(sign_type: str) -> None:
    cfg = adapter_settings(sign_type)
    signed = {**QUERY_ANSWER, "sign": vendor(sign_type).sign(QUERY_ANSWER)}

    assert isinstance(run_interpret(cfg, signed, None), InProgress)
    forged = {**signed, "data": {**QUERY_ANSWER["data"], "status": "DELIVERED"}}
    assert run_interpret(cfg, forged, None) == Abnormal(
        "bad_signature", "answer signature missing or wrong"
    )


@pytest.mark.parametrize("sign_type", signing.SIGN_TYPES)
def test_interpret_trusts_a_vendor_signature_in_the_header_only(sign_type: str) -> None:
    cfg = adapter_settings(sign_type, sign_location="header")
    signature = vendor(sign_type).sign(QUERY_ANSWER)

    assert isinstance(run_interpret(cfg, QUERY_ANSWER, signature), InProgress)
    # header mode: a signature in the body is not looked at
    missing = run_interpret(cfg, {**QUERY_ANSWER, "sign": signature}, None)
    assert isinstance(missing, Abnormal)
    assert missing.kind == "bad_signature"
    wrong = run_interpret(cfg, QUERY_ANSWER, merchant(sign_type).sign(QUERY_ANSWER))
    assert isinstance(wrong, Abnormal) == (sign_type in ASYMMETRIC)


# -------------------------------------------------------------------- properties

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
JSON_VALUES = st.recursive(
    JSON_SCALARS | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELDS = st.dictionaries(st.text(min_size=1, max_size=8), JSON_VALUES, min_size=1, max_size=6)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# one signer per scheme, built once: SM2 key set-up costs a few scalar multiplications
SIGNERS = {sign_type: self_pair(sign_type) for sign_type in signing.SIGN_TYPES}


@PROPERTY
@given(sign_type=st.sampled_from(signing.SIGN_TYPES), fields=FIELDS, junk=st.text(max_size=80))
def test_property_what_is_signed_verifies_and_junk_never_raises(
    sign_type: str, fields: dict[str, Any], junk: str
) -> None:
    signer = SIGNERS[sign_type]
    signature = signer.sign(fields)
    assert signer.verify(fields, signature) is True
    assert signer.verify(fields, junk) is (junk == signature)


@PROPERTY
@given(
    sign_type=st.sampled_from(signing.SIGN_TYPES),
    fields=FIELDS,
    key=st.text(min_size=1, max_size=8),
    value=JSON_VALUES,
)
def test_property_a_changed_signed_value_fails(
    sign_type: str, fields: dict[str, Any], key: str, value: Any
) -> None:
    signer = SIGNERS[sign_type]
    signature = signer.sign(fields)
    changed = {**fields, key: value}
    if signer.canonical(changed) != signer.canonical(fields):
        assert not signer.verify(changed, signature)
