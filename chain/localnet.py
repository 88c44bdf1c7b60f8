"""`eranos localnet`: Solana JSON-RPC on 127.0.0.1 over an in-process LiteSVM with the eranos
program deployed at its fixed id.

It serves the methods solana-py, anchorpy and `chain.client` use, with the cluster's semantics:
a failed preflight comes back as JSON-RPC error -32002 carrying the transaction error and the
program logs, commitment parameters are accepted (everything is final at once), unknown methods
get -32601, bad parameters -32602, unparseable bodies -32700, and a fault in a handler -32603
without stopping the server. `--state FILE` restores accounts
at start and saves them on exit, so a local run survives restarts.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import base58
from solders.account import Account
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from chain import spec
from chain.svm import ProgramSvm

log = logging.getLogger("eranos.localnet")

MAX_BODY_BYTES = 1 << 20
VERSION = {"solana-core": "2.1.0", "feature-set": 0}
FAUCET_LAMPORTS_LIMIT = 1_000_000 * 10**9


class InvalidParams(Exception):
    """The request's parameters are malformed: JSON-RPC error -32602."""


class RpcFailure(Exception):
    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _pubkey(value: object) -> Pubkey:
    try:
        return Pubkey.from_string(str(value))
    except ValueError:
        raise InvalidParams(f"invalid pubkey {value!r}") from None


def _hash(value: object) -> Hash:
    try:
        return Hash.from_string(str(value))
    except Exception:  # solders raises ParseHashError, which is no ValueError
        raise InvalidParams(f"invalid blockhash {value!r}") from None


def _config(params: list, index: int) -> dict:
    cfg = params[index] if len(params) > index else {}
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise InvalidParams("the configuration parameter must be an object")
    return cfg


class Localnet:
    """The JSON-RPC method table over one ProgramSvm; thread-safe behind one lock."""

    def __init__(self, svm: ProgramSvm | None = None) -> None:
        self.svm = svm or ProgramSvm()
        self.lock = threading.Lock()
        self.methods: dict[str, Callable[[list], Any]] = {
            "getLatestBlockhash": self.get_latest_blockhash,
            "isBlockhashValid": self.is_blockhash_valid,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "getSignatureStatuses": self.get_signature_statuses,
            "getAccountInfo": self.get_account_info,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getBalance": self.get_balance,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance,
            "getSlot": lambda params: self.svm.slot,
            "getBlockHeight": lambda params: self.svm.slot,
            "requestAirdrop": self.request_airdrop,
            "getTokenAccountBalance": self.get_token_account_balance,
            "getVersion": lambda params: VERSION,
            "getHealth": lambda params: "ok",
            "getGenesisHash": lambda params: "eranos localnet",
        }

    def call(self, method: str, params: object) -> object:
        if method not in self.methods:
            raise RpcFailure(-32601, f"Method not found: {method}")
        if params is None:
            params = []
        if not isinstance(params, list):
            raise RpcFailure(-32602, "params must be an array")
        try:
            with self.lock:
                return self.methods[method](params)
        except (InvalidParams, IndexError, TypeError, ValueError) as exc:
            raise RpcFailure(-32602, f"Invalid params: {exc}") from None

    def _context(self, value: object) -> dict:
        return {"context": {"slot": self.svm.slot, "apiVersion": VERSION["solana-core"]}, "value": value}

    def get_latest_blockhash(self, params: list) -> dict:
        return self._context(
            {"blockhash": str(self.svm.latest_blockhash()), "lastValidBlockHeight": self.svm.slot + 150}
        )

    def is_blockhash_valid(self, params: list) -> dict:
        return self._context(self.svm.blockhash_valid(_hash(params[0])))

    def _decode_tx(self, params: list) -> VersionedTransaction:
        encoding = _config(params, 1).get("encoding", "base58")
        if not isinstance(params[0], str) or len(params[0]) > 4 * 1232:
            raise InvalidParams("the transaction must be an encoded string of at most 1232 bytes")
        if encoding == "base64":
            raw = base64.b64decode(params[0], validate=True)
        elif encoding == "base58":
            raw = base58.b58decode(params[0])
        else:
            raise InvalidParams(f"unsupported encoding {encoding!r}")
        if len(raw) > 1232:
            raise InvalidParams(f"transaction too large: {len(raw)} bytes > 1232")
        return VersionedTransaction.from_bytes(raw)

    def _simulation(self, outcome) -> dict:
        return {
            "err": outcome.err,
            "logs": outcome.logs,
            "accounts": None,
            "unitsConsumed": outcome.units,
            "returnData": None,
            "innerInstructions": None,
            "replacementBlockhash": None,
        }

    def send_transaction(self, params: list) -> str:
        tx = self._decode_tx(params)
        if not _config(params, 1).get("skipPreflight", False):
            preflight = self.svm.process(tx, simulate=True)
            if preflight.err is not None:
                raise RpcFailure(
                    -32002,
                    f"Transaction simulation failed: {json.dumps(preflight.err)}",
                    self._simulation(preflight),
                )
        outcome = self.svm.process(tx)
        if outcome.err in ("AlreadyProcessed", "BlockhashNotFound"):
            raise RpcFailure(
                -32002, f"Transaction simulation failed: {outcome.err}", self._simulation(outcome)
            )
        log.debug("tx %s err=%s units=%d", outcome.signature, outcome.err, outcome.units)
        return outcome.signature

    def simulate_transaction(self, params: list) -> dict:
        return self._context(self._simulation(self.svm.process(self._decode_tx(params), simulate=True)))

    def get_signature_statuses(self, params: list) -> dict:
        signatures = params[0]
        if not isinstance(signatures, list) or len(signatures) > 256:
            raise InvalidParams("expected a list of at most 256 signatures")
        statuses = []
        for sig in signatures:
            Signature.from_string(sig)
            outcome = self.svm.history.get(sig)
            if outcome is None:
                statuses.append(None)
                continue
            status = {"Ok": None} if outcome.err is None else {"Err": outcome.err}
            statuses.append(
                {
                    "slot": outcome.slot,
                    "confirmations": None,
                    "err": outcome.err,
                    "status": status,
                    "confirmationStatus": "finalized",
                }
            )
        return self._context(statuses)

    def _account_json(self, pubkey: Pubkey, encoding: str) -> dict | None:
        account = self.svm.account(pubkey)
        if account is None or account.lamports == 0:
            return None
        data = bytes(account.data)
        if encoding == "base64":
            encoded: object = [base64.b64encode(data).decode(), "base64"]
        elif encoding == "base58":
            encoded = [base58.b58encode(data).decode(), "base58"]
        else:
            raise InvalidParams(f"unsupported encoding {encoding!r} (use base64)")
        return {
            "data": encoded,
            "executable": account.executable,
            "lamports": account.lamports,
            "owner": str(account.owner),
            "rentEpoch": account.rent_epoch,
            "space": len(data),
        }

    def get_account_info(self, params: list) -> dict:
        encoding = _config(params, 1).get("encoding", "base64")
        return self._context(self._account_json(_pubkey(params[0]), encoding))

    def get_multiple_accounts(self, params: list) -> dict:
        keys = params[0]
        if not isinstance(keys, list) or len(keys) > 100:
            raise InvalidParams("expected a list of at most 100 pubkeys")
        encoding = _config(params, 1).get("encoding", "base64")
        return self._context([self._account_json(_pubkey(k), encoding) for k in keys])

    def get_balance(self, params: list) -> dict:
        return self._context(self.svm.balance(_pubkey(params[0])))

    def get_minimum_balance(self, params: list) -> int:
        size = params[0]
        if not isinstance(size, int) or not 0 <= size <= 10 << 20:
            raise InvalidParams("size must be an integer between 0 and 10 MiB")
        return self.svm.rent_exempt_minimum(size)

    def request_airdrop(self, params: list) -> str:
        lamports = params[1]
        if not isinstance(lamports, int) or not 0 < lamports <= FAUCET_LAMPORTS_LIMIT:
            raise InvalidParams(f"lamports must be between 1 and {FAUCET_LAMPORTS_LIMIT}")
        return self.svm.airdrop(_pubkey(params[0]), lamports)

    def get_token_account_balance(self, params: list) -> dict:
        account = self.svm.account(_pubkey(params[0]))
        if account is None or str(account.owner) != spec.TOKEN_PROGRAM or len(account.data) != 165:
            raise RpcFailure(-32602, "Invalid param: not a Token account")
        data = bytes(account.data)
        mint = self.svm.account(Pubkey.from_bytes(data[:32]))
        decimals = bytes(mint.data)[44] if mint is not None else 0
        amount = int.from_bytes(data[64:72], "little")
        ui = amount / 10**decimals
        return self._context(
            {"amount": str(amount), "decimals": decimals, "uiAmount": ui, "uiAmountString": f"{ui:g}"}
        )

    # --- persistence ---

    def save(self, path: Path) -> None:
        with self.lock:
            accounts = {}
            for key in sorted(self.svm.touched, key=str):
                account = self.svm.account(key)
                if account is None or key == self.svm.program_id or account.executable:
                    continue
                accounts[str(key)] = {
                    "lamports": account.lamports,
                    "owner": str(account.owner),
                    "rent_epoch": account.rent_epoch,
                    "data": base64.b64encode(bytes(account.data)).decode(),
                }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "accounts": accounts}))
        tmp.replace(path)

    def restore(self, path: Path) -> int:
        state = json.loads(path.read_text())
        if state.get("version") != 1:
            raise ValueError(f"{path}: unknown localnet state version {state.get('version')!r}")
        for key, a in state["accounts"].items():
            account = Account(
                a["lamports"],
                base64.b64decode(a["data"]),
                Pubkey.from_string(a["owner"]),
                False,
                a["rent_epoch"],
            )
            self.svm.set_account(Pubkey.from_string(key), account)
        return len(state["accounts"])

    # --- HTTP ---

    def handle_body(self, body: bytes) -> bytes:
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):  # bad JSON or UTF-8, integers over 4,300 digits, deep nesting
            return json.dumps(_error(None, -32700, "Parse error")).encode()
        if isinstance(request, list):
            if not request or len(request) > 64:
                return json.dumps(_error(None, -32600, "batch must hold 1 to 64 requests")).encode()
            return json.dumps([self._one(r) for r in request]).encode()
        return json.dumps(self._one(request)).encode()

    def _one(self, request: object) -> dict:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return _error(None, -32600, "Invalid request")
        rid = request.get("id")
        try:
            return {
                "jsonrpc": "2.0",
                "result": self.call(request["method"], request.get("params")),
                "id": rid,
            }
        except RpcFailure as exc:
            return _error(rid, exc.code, exc.message, exc.data)
        except Exception:  # a bug here must not take the server down: report it, keep serving
            log.exception("internal error in %s", request["method"])
            return _error(rid, -32603, "Internal error")

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Server:
        return Server(self, host, port)


def _error(rid: object, code: int, message: str, data: object = None) -> dict:
    err: dict = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": rid}


class Server:
    """The HTTP server on its own daemon thread; `url` to connect, `close()` to stop."""

    def __init__(self, localnet: Localnet, host: str, port: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                header = self.headers.get("Content-Length") or "0"
                length = int(header) if header.isdigit() else -1
                if not 0 < length <= MAX_BODY_BYTES:
                    self.send_error(400 if length < 0 else 413 if length else 411)
                    return
                reply = localnet.handle_body(self.rfile.read(length))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("%s " + fmt, self.address_string(), *args)

        self.localnet = localnet
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="localnet", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
