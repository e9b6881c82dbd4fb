"""Write ``schemes.json``: signing vectors computed by the ``openssl`` command, not by orderwatch.

Run from the repository root: ``python tests/unit/vectors/make_schemes.py`` (OpenSSL 3 with
SM2/SM3). The canonical strings are written by hand from the rule in DESIGN §5; every
digest and signature is OpenSSL's, so the tests compare orderwatch with an independent
implementation. Official figures (WeChat Pay v2's example, GB/T 32905's SM3 examples) are
checked against OpenSSL here too. The ``*.pem`` keys beside this file are TEST KEYS ONLY,
made with ``openssl genpkey``; they sign nothing real.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

WECHAT_FIELDS = {
    "appid": "wxd930ea5d5a258f4f",
    "mch_id": "10000100",
    "device_info": "1000",
    "body": "test",
    "nonce_str": "ibuaiVcKdpRxkhJA",
}
WECHAT_KEY = "192006250b4c09247ec02edce69f6a2d"
WECHAT_CANONICAL = (
    "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA"
)
# WeChat Pay v2 docs, 安全规范 → 签名算法: pay.weixin.qq.com/wiki/doc/api/jsapi.php?chapter=4_3
WECHAT_MD5 = "9A0A8659F005D6984697E2CA0A9CF3B7"
WECHAT_HMAC = "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
# GB/T 32905-2016 appendix A
SM3_ABC = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
SM3_ABCD16 = "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"

PLACE_FIELDS: dict[str, Any] = {
    "merchant_id": "M0001",
    "order_no": "R20261126000001",
    "sku": "SKU-1001",
    "quantity": 1,
    "points": 12000,
    "recipient": {"name": "张三", "phone": "13800000000", "address": "上海市浦东新区世纪大道100号"},
    "timestamp": 1764118923,
    "nonce": "k3J9xq2LmP0aZ7Rt",
}
PLACE_CANONICAL = (
    "merchant_id=M0001&nonce=k3J9xq2LmP0aZ7Rt&order_no=R20261126000001&points=12000"
    '&quantity=1&recipient={"address":"上海市浦东新区世纪大道100号","name":"张三",'
    '"phone":"13800000000"}&sku=SKU-1001&timestamp=1764118923'
)
PLACE_SECRET = "vector-secret-2"
ABOUT = (
    "Signing vectors for every sign_type (vendors/signing.py), computed with the openssl "
    "command by make_schemes.py beside this file; keys: the *.pem test keys here. RSA2 "
    "signatures are deterministic (PKCS#1 v1.5); SM2 ones are randomised, so they are "
    "vectors for verification only."
)


def openssl(*args: str, data: bytes) -> bytes:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True).stdout


def digest(name: str, data: str, *, hmac_key: str | None = None) -> str:
    args = ["dgst", f"-{name}", "-r"]
    if hmac_key is not None:
        args += ["-hmac", hmac_key]
    return openssl(*args, data=data.encode()).split()[0].decode()


def rsa2(key: str, data: str) -> str:
    raw = openssl("dgst", "-sha256", "-sign", str(HERE / key), data=data.encode())
    return base64.b64encode(raw).decode()


def sm2(key: str, data: str, user_id: str) -> str:
    raw = openssl(
        "dgst", "-sm3", "-sign", str(HERE / key), "-sigopt", f"distid:{user_id}",
        data=data.encode(),
    )  # fmt: skip
    return base64.b64encode(raw).decode()


def main() -> None:
    symmetric_wechat = {
        "HMAC-SHA256": digest("sha256", WECHAT_CANONICAL, hmac_key=WECHAT_KEY),
        "MD5": digest("md5", f"{WECHAT_CANONICAL}&key={WECHAT_KEY}").upper(),
        "WECHAT-HMAC-SHA256": digest(
            "sha256", f"{WECHAT_CANONICAL}&key={WECHAT_KEY}", hmac_key=WECHAT_KEY
        ).upper(),
        "SM3": digest("sm3", f"{WECHAT_CANONICAL}&key={WECHAT_KEY}"),
    }
    assert symmetric_wechat["MD5"] == WECHAT_MD5
    assert symmetric_wechat["WECHAT-HMAC-SHA256"] == WECHAT_HMAC
    assert digest("sm3", "abc") == SM3_ABC
    assert digest("sm3", "abcd" * 16) == SM3_ABCD16

    place = f"{PLACE_CANONICAL}&key={PLACE_SECRET}"
    options_fields = {"b": "2", "a": "", "c": None, "sign_type": "RSA2", "d": "x y"}
    vectors = {
        "about": ABOUT,
        "sm3_standard": [
            {"message": "abc", "digest": SM3_ABC},
            {"message": "abcd" * 16, "digest": SM3_ABCD16},
        ],
        "cases": [
            {
                "title": "WeChat Pay v2 official example (MD5 and HMAC-SHA256 figures published)",
                "fields": WECHAT_FIELDS,
                "secret": WECHAT_KEY,
                "canonical": WECHAT_CANONICAL,
                **symmetric_wechat,
                "RSA2": rsa2("rsa_merchant.pem", WECHAT_CANONICAL),
                "SM2": sm2("sm2_merchant.pem", WECHAT_CANONICAL, "1234567812345678"),
            },
            {
                "title": "a place-order request: nested recipient, Chinese text, integers",
                "fields": PLACE_FIELDS,
                "secret": PLACE_SECRET,
                "canonical": PLACE_CANONICAL,
                "HMAC-SHA256": digest("sha256", PLACE_CANONICAL, hmac_key=PLACE_SECRET),
                "MD5": digest("md5", place).upper(),
                "WECHAT-HMAC-SHA256": digest("sha256", place, hmac_key=PLACE_SECRET).upper(),
                "SM3": digest("sm3", place),
                "RSA2": rsa2("rsa_merchant.pem", PLACE_CANONICAL),
                "SM2": sm2("sm2_merchant.pem", PLACE_CANONICAL, "1234567812345678"),
            },
        ],
        "sm2_user_id": {
            "title": "SM2 with another user id (GB/T 32918's example id)",
            "user_id": "ALICE123@YAHOO.COM",
            "canonical": WECHAT_CANONICAL,
            "SM2": sm2("sm2_merchant.pem", WECHAT_CANONICAL, "ALICE123@YAHOO.COM"),
        },
        "options": {
            "fields": options_fields,
            "secret": "opt-secret",
            "default": "b=2&d=x y&sign_type=RSA2",
            "exclude_sign_type": "b=2&d=x y",
            "keep_empty": "a=&b=2&c=&d=x y&sign_type=RSA2",
            "HMAC-SHA256 default": digest(
                "sha256", "b=2&d=x y&sign_type=RSA2", hmac_key="opt-secret"
            ),
            "HMAC-SHA256 exclude_sign_type": digest("sha256", "b=2&d=x y", hmac_key="opt-secret"),
            "HMAC-SHA256 keep_empty": digest(
                "sha256", "a=&b=2&c=&d=x y&sign_type=RSA2", hmac_key="opt-secret"
            ),
            "RSA2 exclude_sign_type": rsa2("rsa_merchant.pem", "b=2&d=x y"),
        },
    }
    out = HERE / "schemes.json"
    out.write_text(json.dumps(vectors, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
