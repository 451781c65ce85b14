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
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

import iptocc

from pipeline.errors import ConfigError
from pipeline.route.logic import Located
from pipeline.route.tables import DATA_DIR, DEMO_HOSTS_FILE

MAX_HOST_LENGTH = 253


class Resolver(Protocol):
    """Turns host names into their addresses; an empty tuple for a host that does not resolve."""

    def addresses(self, host: str) -> tuple[str, ...]: ...

    def addresses_many(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """All of a report's hosts at once (a network resolver asks in parallel, within one deadline)."""
        ...


class FixedResolver:
    """Answers from a fixed table (host -> addresses); never touches the network."""

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        self.table = {_key(host): tuple(ips) for host, ips in table.items()}

    def addresses(self, host: str) -> tuple[str, ...]:
        return self.table.get(_key(host), ())

    def addresses_many(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        return {host: self.addresses(host) for host in hosts}

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


def _key(host: str) -> str:
    return host.strip().lower().rstrip(".")


def demo_resolver() -> FixedResolver:
    """The fixed resolver of the tests and the demo (``data/demo_hosts.csv``)."""
    return FixedResolver.from_csv(DATA_DIR / DEMO_HOSTS_FILE)


class SocketResolver:
    """The system resolver, asked in parallel with one deadline per report, and a cache with expiry.

    ``getaddrinfo`` has no timeout of its own, so lookups run on a bounded pool of worker threads and
    are abandoned at the deadline (a worker finishes in the background). The deadline matters: the
    runner's Kafka transaction times out after 30 s, and a batch must finish well before (``stage.py``
    keeps batches small so that a batch of reports whose hosts all time out still commits). A host that
    does not answer in time is not cached and is referred to the national centre like one that does not
    resolve. Answers are cached for ``ttl_s``; failures for ``negative_ttl_s``.
    """

    def __init__(
        self,
        *,
        budget_s: float = 1.5,
        ttl_s: float = 300.0,
        negative_ttl_s: float = 30.0,
        cache_size: int = 4096,
        workers: int = 16,
    ) -> None:
        self.budget_s = budget_s
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="route-dns")

    def addresses(self, host: str) -> tuple[str, ...]:
        return self.addresses_many([host])[host]

    def addresses_many(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        now = time.monotonic()
        by_key: dict[str, list[str]] = {}
        for host in hosts:
            by_key.setdefault(_key(host), []).append(host)
        answers: dict[str, tuple[str, ...]] = {}
        asked: dict[str, Future[list[Any]]] = {}
        for key in by_key:
            cached = self._cached(key, now)
            if cached is not None:
                answers[key] = cached
            else:
                asked[key] = self._pool.submit(socket.getaddrinfo, key, None, proto=socket.IPPROTO_TCP)
        if asked:
            wait(asked.values(), timeout=self.budget_s)
            answers.update({key: self._answer(key, future) for key, future in asked.items()})
        return {host: answers[_key(host)] for host in hosts}

    def _cached(self, key: str, now: float) -> tuple[str, ...] | None:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None or entry[0] < now:
                return None
            self._cache.move_to_end(key)
            return entry[1]

    def _answer(self, key: str, future: Future[list[Any]]) -> tuple[str, ...]:
        if not future.done():
            future.cancel()
            return ()
        try:
            infos = future.result()
        except (OSError, UnicodeError):
            self._store(key, (), self.negative_ttl_s)
            return ()
        answer = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        self._store(key, answer, self.ttl_s if answer else self.negative_ttl_s)
        return answer

    def _store(self, key: str, answer: tuple[str, ...], ttl: float) -> None:
        with self._lock:
            self._cache[key] = (time.monotonic() + ttl, answer)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

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
    """Place each target; the host names among them are resolved together (one deadline for all)."""
    unique = list(dict.fromkeys(targets))
    names = [t for t in unique if not is_address(t) and _host_is_readable(t.strip())]
    answers = FixedResolver(resolver.addresses_many([t.strip() for t in names])) if names else _NO_ANSWERS
    return {t: locate(t, answers) for t in unique}


_NO_ANSWERS = FixedResolver({})
