"""LMDB persistence for sez-node (design §14). Imports only ``protocol``."""

from .errors import StoreError
from .logstore import AppendResult, Head, LogStore, OriginInfo

__all__ = ["AppendResult", "Head", "LogStore", "OriginInfo", "StoreError"]
