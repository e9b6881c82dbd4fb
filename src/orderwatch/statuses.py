"""The statuses an order moves through and the closed set of reasons it can fail for.

::

    PENDING ──dispatch──▶ SENT ──vendor accepts──▶ ORDERED ──delivered──▶ SUCCEEDED
       │                   │  ╲                      │  ╲
       │ unpaid            │   ╲ answer lost:        │   ╲ still processing, shipped,
       │ cancelled         │    ╲ reconcile by query │    ╲ timeout, 503, garbage:
       ▼                   ▼     (stays SENT)        ▼     poll again on the backoff
     FAILED ◀──rejected / unreachable ─────── failed / not found / max polls / deadline

Codes are what machines compare; labels are what Chinese-speaking operators read.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    ORDERED = "ORDERED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def label(self) -> str:
        return _STATUS_LABELS[self]

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


_STATUS_LABELS = {
    Status.PENDING: "待处理",
    Status.SENT: "已发送",
    Status.ORDERED: "已下单",
    Status.SUCCEEDED: "交易成功",
    Status.FAILED: "交易失败",
}

FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED})
ACTIVE_STATUSES = (Status.PENDING, Status.SENT, Status.ORDERED)


class Reason(StrEnum):
    """Why an order ended as FAILED. A closed set: every failure names exactly one."""

    UNPAID = "UNPAID"
    PLACE_REJECTED = "PLACE_REJECTED"
    PLACE_UNREACHABLE = "PLACE_UNREACHABLE"
    VENDOR_FAILED = "VENDOR_FAILED"
    NOT_FOUND_AT_VENDOR = "NOT_FOUND_AT_VENDOR"
    MAX_POLLS_EXCEEDED = "MAX_POLLS_EXCEEDED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    RESOLVED_BY_OPERATOR = "RESOLVED_BY_OPERATOR"
    INVALID_STATE = "INVALID_STATE"

    @property
    def text(self) -> str:
        return _REASON_TEXTS[self]


_REASON_TEXTS = {
    Reason.UNPAID: "订单未支付 (not paid at dispatch)",
    Reason.PLACE_REJECTED: "权益商拒绝下单 (vendor refused the order)",
    Reason.PLACE_UNREACHABLE: "下单无有效应答 (no valid answer to place-order)",
    Reason.VENDOR_FAILED: "权益商返回交易失败 (vendor reports the order failed)",
    Reason.NOT_FOUND_AT_VENDOR: "权益商查无此单 (vendor does not know the order)",
    Reason.MAX_POLLS_EXCEEDED: "超过最大轮询次数 (max polls exceeded)",
    Reason.DEADLINE_EXCEEDED: "超过轮询截止时间 (polling deadline exceeded)",
    Reason.CANCELLED: "下单前已取消 (cancelled before placing)",
    Reason.RESOLVED_BY_OPERATOR: "人工处理为失败 (closed as failed by an operator)",
    Reason.INVALID_STATE: "订单状态无法处理 (the engine cannot act on this order)",
}
