from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_DELTA: _ClassVar[PayloadKind]
    PAYLOAD_KIND_KEYFRAME: _ClassVar[PayloadKind]
    PAYLOAD_KIND_STATE: _ClassVar[PayloadKind]
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_DELTA: PayloadKind
PAYLOAD_KIND_KEYFRAME: PayloadKind
PAYLOAD_KIND_STATE: PayloadKind

class Hello(_message.Message):
    __slots__ = ("protocol_version", "package_version", "node_id", "swarm_id", "fingerprint", "round", "live_degree", "listen_address", "seq", "nonce", "mac", "gradient_tracking", "receiver", "session", "recipe", "crl_number")
    class RecipeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    LIVE_DEGREE_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_TRACKING_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    CRL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    package_version: str
    node_id: str
    swarm_id: str
    fingerprint: str
    round: int
    live_degree: int
    listen_address: str
    seq: int
    nonce: bytes
    mac: bytes
    gradient_tracking: bool
    receiver: str
    session: bytes
    recipe: _containers.ScalarMap[str, str]
    crl_number: int
    def __init__(self, protocol_version: _Optional[int] = ..., package_version: _Optional[str] = ..., node_id: _Optional[str] = ..., swarm_id: _Optional[str] = ..., fingerprint: _Optional[str] = ..., round: _Optional[int] = ..., live_degree: _Optional[int] = ..., listen_address: _Optional[str] = ..., seq: _Optional[int] = ..., nonce: _Optional[bytes] = ..., mac: _Optional[bytes] = ..., gradient_tracking: _Optional[bool] = ..., receiver: _Optional[str] = ..., session: _Optional[bytes] = ..., recipe: _Optional[_Mapping[str, str]] = ..., crl_number: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("accepted", "reason", "node")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    node: Hello
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., node: _Optional[_Union[Hello, _Mapping]] = ...) -> None: ...

class TensorMeta(_message.Message):
    __slots__ = ("name", "shape", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ...) -> None: ...

class PayloadHeader(_message.Message):
    __slots__ = ("sender_id", "swarm_id", "fingerprint", "round", "sender_degree", "kind", "codec", "seq", "total_bytes", "crc32", "tensors", "mac", "tracker_bytes", "session", "receiver_id")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SENDER_DEGREE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    TRACKER_BYTES_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_ID_FIELD_NUMBER: _ClassVar[int]
    sender_id: str
    swarm_id: str
    fingerprint: str
    round: int
    sender_degree: int
    kind: PayloadKind
    codec: str
    seq: int
    total_bytes: int
    crc32: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorMeta]
    mac: bytes
    tracker_bytes: int
    session: bytes
    receiver_id: str
    def __init__(self, sender_id: _Optional[str] = ..., swarm_id: _Optional[str] = ..., fingerprint: _Optional[str] = ..., round: _Optional[int] = ..., sender_degree: _Optional[int] = ..., kind: _Optional[_Union[PayloadKind, str]] = ..., codec: _Optional[str] = ..., seq: _Optional[int] = ..., total_bytes: _Optional[int] = ..., crc32: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorMeta, _Mapping]]] = ..., mac: _Optional[bytes] = ..., tracker_bytes: _Optional[int] = ..., session: _Optional[bytes] = ..., receiver_id: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PayloadHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[PayloadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PushAck(_message.Message):
    __slots__ = ("accepted", "reason", "need_keyframe")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NEED_KEYFRAME_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    need_keyframe: bool
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., need_keyframe: _Optional[bool] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("node_id", "swarm_id", "kind", "nonce", "mac", "session", "receiver_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    swarm_id: str
    kind: PayloadKind
    nonce: bytes
    mac: bytes
    session: bytes
    receiver_id: str
    def __init__(self, node_id: _Optional[str] = ..., swarm_id: _Optional[str] = ..., kind: _Optional[_Union[PayloadKind, str]] = ..., nonce: _Optional[bytes] = ..., mac: _Optional[bytes] = ..., session: _Optional[bytes] = ..., receiver_id: _Optional[str] = ...) -> None: ...

class LeaveNotice(_message.Message):
    __slots__ = ("node_id", "swarm_id", "round", "nonce", "mac", "session", "receiver_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    swarm_id: str
    round: int
    nonce: bytes
    mac: bytes
    session: bytes
    receiver_id: str
    def __init__(self, node_id: _Optional[str] = ..., swarm_id: _Optional[str] = ..., round: _Optional[int] = ..., nonce: _Optional[bytes] = ..., mac: _Optional[bytes] = ..., session: _Optional[bytes] = ..., receiver_id: _Optional[str] = ...) -> None: ...

class LeaveAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevocationsRequest(_message.Message):
    __slots__ = ("crl_number",)
    CRL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    crl_number: int
    def __init__(self, crl_number: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("include_digest", "nonce", "mac")
    INCLUDE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    include_digest: bool
    nonce: bytes
    mac: bytes
    def __init__(self, include_digest: _Optional[bool] = ..., nonce: _Optional[bytes] = ..., mac: _Optional[bytes] = ...) -> None: ...

class NeighborStatus(_message.Message):
    __slots__ = ("node_id", "address", "live", "weight", "degree", "last_seen_unix", "bytes_sent", "bytes_received", "round", "missed_deadlines", "package_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEGREE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MISSED_DEADLINES_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    live: bool
    weight: float
    degree: int
    last_seen_unix: float
    bytes_sent: int
    bytes_received: int
    round: int
    missed_deadlines: int
    package_version: str
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., live: _Optional[bool] = ..., weight: _Optional[float] = ..., degree: _Optional[int] = ..., last_seen_unix: _Optional[float] = ..., bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., round: _Optional[int] = ..., missed_deadlines: _Optional[int] = ..., package_version: _Optional[str] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("node_id", "swarm_id", "fingerprint", "package_version", "state", "round", "step", "loss", "last_eval", "self_weight", "neighbors", "bytes_sent", "bytes_received", "rejected", "listen_address", "codec", "started_unix", "total_rounds", "last_round_seconds", "keyframes_sent", "state_digest", "auth", "gradient_tracking", "weighting", "method", "deca", "kill_revive", "pending", "consensus_rounds")
    class LastEvalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SWARM_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVAL_FIELD_NUMBER: _ClassVar[int]
    SELF_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NEIGHBORS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    LISTEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    LAST_ROUND_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEYFRAMES_SENT_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_TRACKING_FIELD_NUMBER: _ClassVar[int]
    WEIGHTING_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DECA_FIELD_NUMBER: _ClassVar[int]
    KILL_REVIVE_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    CONSENSUS_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    swarm_id: str
    fingerprint: str
    package_version: str
    state: str
    round: int
    step: int
    loss: float
    last_eval: _containers.ScalarMap[str, float]
    self_weight: float
    neighbors: _containers.RepeatedCompositeFieldContainer[NeighborStatus]
    bytes_sent: int
    bytes_received: int
    rejected: _containers.ScalarMap[str, int]
    listen_address: str
    codec: str
    started_unix: float
    total_rounds: int
    last_round_seconds: float
    keyframes_sent: int
    state_digest: str
    auth: str
    gradient_tracking: bool
    weighting: str
    method: str
    deca: DecaStatus
    kill_revive: KillReviveStatus
    pending: _containers.RepeatedCompositeFieldContainer[PendingPeer]
    consensus_rounds: int
    def __init__(self, node_id: _Optional[str] = ..., swarm_id: _Optional[str] = ..., fingerprint: _Optional[str] = ..., package_version: _Optional[str] = ..., state: _Optional[str] = ..., round: _Optional[int] = ..., step: _Optional[int] = ..., loss: _Optional[float] = ..., last_eval: _Optional[_Mapping[str, float]] = ..., self_weight: _Optional[float] = ..., neighbors: _Optional[_Iterable[_Union[NeighborStatus, _Mapping]]] = ..., bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., rejected: _Optional[_Mapping[str, int]] = ..., listen_address: _Optional[str] = ..., codec: _Optional[str] = ..., started_unix: _Optional[float] = ..., total_rounds: _Optional[int] = ..., last_round_seconds: _Optional[float] = ..., keyframes_sent: _Optional[int] = ..., state_digest: _Optional[str] = ..., auth: _Optional[str] = ..., gradient_tracking: _Optional[bool] = ..., weighting: _Optional[str] = ..., method: _Optional[str] = ..., deca: _Optional[_Union[DecaStatus, _Mapping]] = ..., kill_revive: _Optional[_Union[KillReviveStatus, _Mapping]] = ..., pending: _Optional[_Iterable[_Union[PendingPeer, _Mapping]]] = ..., consensus_rounds: _Optional[int] = ...) -> None: ...

class PendingPeer(_message.Message):
    __slots__ = ("address", "reach")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REACH_FIELD_NUMBER: _ClassVar[int]
    address: str
    reach: str
    def __init__(self, address: _Optional[str] = ..., reach: _Optional[str] = ...) -> None: ...

class DecaStatus(_message.Message):
    __slots__ = ("block", "blocks", "rounds_left")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_LEFT_FIELD_NUMBER: _ClassVar[int]
    block: int
    blocks: int
    rounds_left: int
    def __init__(self, block: _Optional[int] = ..., blocks: _Optional[int] = ..., rounds_left: _Optional[int] = ...) -> None: ...

class KillReviveStatus(_message.Message):
    __slots__ = ("active_modules", "modules")
    ACTIVE_MODULES_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    active_modules: int
    modules: int
    def __init__(self, active_modules: _Optional[int] = ..., modules: _Optional[int] = ...) -> None: ...
