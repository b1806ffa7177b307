"""Kademlia DHT over the QUIC transport: routing table, iterative lookups, signed records.

Public surface (see docs/dht.md): :class:`DhtNode` with :class:`DhtConfig`, the
transport contract :class:`DhtTransport` (and :class:`EndpointTransport` to adapt an
endpoint to it), :class:`Contact`, signed :class:`Record`\\ s, and JSON persistence
of known contacts.
"""

from dht.announce import Announcement, sign_announcement, validate_announcement
from dht.clock import Clock, LoopClock
from dht.config import DhtConfig
from dht.contact import Contact
from dht.endpoint_adapter import EndpointTransport, ErrorMap
from dht.errors import (
    DhtError,
    DhtLocalError,
    DhtRemoteError,
    PeerCallError,
    PeerRejected,
    PeerTimeout,
    PeerUnreachable,
    RecordError,
    RequestRejected,
)
from dht.node import DhtNode, LookupOutcome
from dht.records import Record, record_key, sign_record, validate
from dht.routing import RoutingTable, load_contacts, save_contacts
from dht.transport import CallerInfo, DhtTransport

__all__ = [
    "Announcement",
    "CallerInfo",
    "Clock",
    "Contact",
    "DhtConfig",
    "DhtError",
    "DhtLocalError",
    "DhtNode",
    "DhtRemoteError",
    "DhtTransport",
    "EndpointTransport",
    "ErrorMap",
    "LookupOutcome",
    "LoopClock",
    "PeerCallError",
    "PeerRejected",
    "PeerTimeout",
    "PeerUnreachable",
    "Record",
    "RecordError",
    "RequestRejected",
    "RoutingTable",
    "load_contacts",
    "record_key",
    "save_contacts",
    "sign_announcement",
    "sign_record",
    "validate",
    "validate_announcement",
]
