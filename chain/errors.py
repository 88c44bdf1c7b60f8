"""What can go wrong talking to the chain, by whose fault.

ChainError
├── RpcUnavailable       the endpoint cannot be reached (retry later, or fix the URL)
├── RpcError             the endpoint answered with a JSON-RPC error that is not a failed transaction
├── TransactionFailed    the runtime refused the transaction (fees, blockhash, a system error)
│   └── ProgramError     the eranos program refused it: `code`, `name`, `msg` from chain/spec.py
└── ConfirmationTimeout  sent, but not confirmed within the deadline (it may still land)
"""

from __future__ import annotations

from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
)

from chain import spec

_BY_CODE = {e.code: e for e in spec.ERRORS}


class ChainError(Exception):
    """Base of every error the chain package raises."""


class RpcUnavailable(ChainError):
    def __init__(self, url: str, cause: object) -> None:
        super().__init__(f"cannot reach the Solana RPC endpoint {url}: {cause}")
        self.url = url


class RpcError(ChainError):
    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: JSON-RPC error {code}: {message}")
        self.code = code
        self.message = message


class TransactionFailed(ChainError):
    def __init__(self, err: object, logs: list[str]) -> None:
        super().__init__(f"transaction failed: {err}")
        self.err = err
        self.logs = logs


class ProgramError(TransactionFailed):
    def __init__(self, code: int, err: object, logs: list[str]) -> None:
        known = _BY_CODE.get(code)
        self.code = code
        self.name = known.name if known else f"Custom{code}"
        self.msg = known.msg if known else "not an eranos error"
        super().__init__(err, logs)
        self.args = (f"eranos program error {code} {self.name}: {self.msg}",)


class ConfirmationTimeout(ChainError):
    def __init__(self, signature: str, seconds: float) -> None:
        super().__init__(f"transaction {signature} not confirmed within {seconds:.0f} s")
        self.signature = signature


def from_transaction_error(err: object, logs: list[str]) -> TransactionFailed:
    """The typed error for a failed transaction, given its error in RPC JSON form."""
    if isinstance(err, dict) and "InstructionError" in err:
        _index, inner = err["InstructionError"]
        if isinstance(inner, dict) and "Custom" in inner:
            return ProgramError(int(inner["Custom"]), err, logs)
    return TransactionFailed(err, logs)


def error_json(err: object) -> object:
    """A solders TransactionError in its JSON-RPC form, e.g. `{"InstructionError": [0, {"Custom": 6000}]}`."""
    if isinstance(err, TransactionErrorInstructionError):
        inner = err.err
        detail: object = (
            {"Custom": inner.code} if isinstance(inner, InstructionErrorCustom) else _variant(inner)
        )
        return {"InstructionError": [err.index, detail]}
    if isinstance(err, TransactionErrorFieldless):
        return _variant(err)
    name = type(err).__name__.removeprefix("TransactionError")
    fields = {k: getattr(err, k) for k in dir(err) if not k.startswith("_") and not callable(getattr(err, k))}
    return {name: fields}


def _variant(enum_value: object) -> str:
    return str(enum_value).rsplit(".", 1)[-1]
