"""The compressed optimizer: per-chunk DCT, top-k momentum exchange, strict wire codec."""

from optim import rice
from optim.codec import Payload, TensorPayload, decode, encode, max_payload_bytes
from optim.config import DemoConfig, ValueMode
from optim.demo import DemoOptimizer
from optim.errors import PayloadError
from optim.schedule import LrSchedule
from optim.spec import ParamSpec

__all__ = [
    "DemoConfig",
    "DemoOptimizer",
    "LrSchedule",
    "ParamSpec",
    "Payload",
    "PayloadError",
    "TensorPayload",
    "ValueMode",
    "decode",
    "encode",
    "max_payload_bytes",
    "rice",
]
