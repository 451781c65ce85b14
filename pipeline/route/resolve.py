"""Where content is hosted: a host name resolved to addresses, an address mapped to a country offline.

``Resolver`` is the one seam to the network. ``SocketResolver`` asks the system resolver
(``socket.getaddrinfo``) with a short deadline; ``FixedResolver`` answers from a table and never touches
the network (tests and the demo use ``demo_resolver()``, built from ``data/demo_hosts.csv``, the same
file the demo's report generator draws its hosts from). An IP literal (IPv4 or IPv6, bracketed or not)
is never resolved: it is placed directly. Countries come from ``iptocc``, an offline copy of the
regional internet registries' delegation files, so no address ever leaves the machine for a lookup.
"""

from __future__ import annotations

import csv
import ipaddress
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Protocol

import iptocc

from pipeline.errors import ConfigError
from pipeline.route.logic import Located
from pipeline.route.tables import DATA_DIR, DEMO_HOSTS_FILE

MAX_HOST_LENGTH = 253


class Resolver(Protocol):
    """Turns a host name into its addresses; an empty tuple when it does not resolve."""

    def addresses(self, host: str) -> tuple[str, ...]: ...


class FixedResolver:
    """Answers from a fixed table (host -> addresses); never touches the network."""

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        self.table = {host.lower().rstrip("."): tuple(ips) for host, ips in table.items()}

    def addresses(self, host: str) -> tuple[str, ...]:
        return self.table.get(host.lower().rstrip("."), ())

    @classmethod
    def from_csv(cls, path: Path) -> FixedResolver:
        """A table with columns ``host`` and ``ip`` (one row per address; a host may have several)."""
        table: dict[str, list[str]] = {}
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if not {"host", "ip"} <= set(reader.fieldnames or ()):
                    raise ConfigError(f"{path}: needs the columns host and ip.")
                for line, row in enumerate(reader, start=2):
                    host, ip = (row.get("host") or "").strip(), (row.get("ip") or "").strip()
                    if not host or not is_address(ip):
                        raise ConfigError(f"{path} line {line}: needs a host and a valid IP address.")
                    table.setdefault(host, []).append(ip)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror}).") from exc
        return cls(table)


def demo_resolver() -> FixedResolver:
    """The fixed resolver of the tests and the demo (``data/demo_hosts.csv``)."""
    return FixedResolver.from_csv(DATA_DIR / DEMO_HOSTS_FILE)


class SocketResolver:
    """The system resolver with a deadline per host, and a small cache of recent answers.

    ``getaddrinfo`` has no timeout of its own, so it runs on a worker thread and is abandoned at the
    deadline (the thread finishes in the background; a bounded pool keeps those from piling up).
    """

    def __init__(self, timeout_s: float = 2.0, cache_size: int = 4096, workers: int = 8) -> None:
        self.timeout_s = timeout_s
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="route-dns")

    def addresses(self, host: str) -> tuple[str, ...]:
        key = host.lower().rstrip(".")
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        future = self._pool.submit(socket.getaddrinfo, key, None, proto=socket.IPPROTO_TCP)
        try:
            infos = future.result(timeout=self.timeout_s)
        except (FutureTimeout, OSError, UnicodeError):
            return ()  # not cached: a slow or failing resolver may answer next time
        found = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        with self._lock:
            self._cache[key] = found
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _unbracket(text: str) -> str:
    text = text.strip()
    return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(_unbracket(text))
    except ValueError:
        return False
    return True


def country_of(address: str) -> str | None:
    """The ISO 3166 alpha-2 country an address is delegated to, or None (private, reserved, unknown)."""
    try:
        ip = ipaddress.ip_address(_unbracket(address))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    code = iptocc.country_code(str(ip))
    return code.upper() if isinstance(code, str) and len(code) == 2 else None


def _host_is_readable(host: str) -> bool:
    if not host or len(host) > MAX_HOST_LENGTH:
        return False
    labels = host.rstrip(".").split(".")
    return all(
        0 < len(label) <= 63 and not any(c.isspace() or c in "/\\@:?#[]%" for c in label) for label in labels
    )


def locate(target: str, resolver: Resolver) -> Located:
    """Place one host name or IP address in a country, or say why it cannot be."""
    text = target.strip()
    if is_address(text):
        address = _unbracket(text)
        country = country_of(address)
        problem = None if country else "is an address that maps to no country"
        return Located(target=target, country=country, address=address, problem=problem)
    if not _host_is_readable(text):
        return Located(target=target, country=None, problem="is not a readable host name")
    addresses = resolver.addresses(text)
    if not addresses:
        return Located(target=target, country=None, problem="does not resolve")
    for address in addresses:
        country = country_of(address)
        if country is not None:
            return Located(target=target, country=country, address=address)
    return Located(
        target=target, country=None, address=addresses[0], problem="resolves to no country's address"
    )


def locate_all(targets: Iterable[str], resolver: Resolver) -> dict[str, Located]:
    return {t: locate(t, resolver) for t in dict.fromkeys(targets)}
