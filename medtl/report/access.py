"""Who may reach the review server, and by which name: the rules, apart from the HTTP plumbing.

* **Addresses.** ``medtl review`` listens on 127.0.0.1. Any other address lets other machines
  connect, so it takes ``--remote`` and a report with readers (each with a personal link).
* **Host names.** A request is answered only when its ``Host`` header names this server exactly:
  the address it listens on (and, on loopback, ``localhost`` / ``127.0.0.1`` / ``[::1]``), or a
  name the lead gave with ``--allow-host``, with the port; on ports 80 and 443 browsers leave
  the port out, so the bare name is accepted there. A wildcard address (``0.0.0.0``) is not a
  name anyone should type, so it needs ``--allow-host``. This is what stops DNS rebinding.
* **Clients.** Pages of a report built with ``--show-identifiers`` go to this machine only,
  unless the lead names that choice (``--remote-identifiers``).

>>> sorted(allowed_hosts("127.0.0.1", 8765))
['127.0.0.1:8765', '[::1]:8765', 'localhost:8765']
>>> sorted(allowed_hosts("10.0.0.5", 80, ["review.example.org"]))
['10.0.0.5', '10.0.0.5:80', 'review.example.org', 'review.example.org:80']
>>> is_loopback("127.0.0.1"), is_loopback("::ffff:127.0.0.1"), is_loopback("192.0.2.7")
(True, True, False)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..errors import ConfigError

__all__ = ["allowed_hosts", "is_loopback", "is_wildcard", "check_listen"]

_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
_BARE_PORTS = (80, 443)  # the ports a browser leaves out of Host


def is_loopback(address: str) -> bool:
    """Whether an address (or ``localhost``) is this machine (IPv4-mapped IPv6 included)."""
    if address.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def is_wildcard(address: str) -> bool:
    """Whether listening on ``address`` means every interface (``0.0.0.0``, ``::``, empty)."""
    try:
        return address == "" or ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _with_port(name: str, port: int) -> set[str]:
    name = name.lower().strip("[]")
    host = f"[{name}]" if ":" in name else name
    return {f"{host}:{port}"} | ({host} if port in _BARE_PORTS else set())


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> set[str]:
    """The ``Host`` header values a server listening on ``host``:``port`` answers (lower case)."""
    names = set(extra)
    if not is_wildcard(host):
        names.add(host)
    if is_loopback(host):
        names.update(_LOOPBACK_NAMES)
    out: set[str] = set()
    for name in names:
        out |= _with_port(name, port)
    return out


def check_listen(host: str, *, remote: bool, allow_hosts: Iterable[str], readers: int) -> None:
    """Refuse an address the lead did not mean to open, before anything listens.

    Raises:
        ConfigError: a non-loopback address without ``remote``; ``remote`` on a report without
            readers; a wildcard address without ``allow_hosts``.

    >>> check_listen("0.0.0.0", remote=False, allow_hosts=[], readers=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    medtl.errors.ConfigError: --host 0.0.0.0 lets other machines connect: pass --remote to mean it ...
    """
    if is_loopback(host):
        return
    if not remote:
        raise ConfigError(None, f"--host {host} lets other machines connect: pass --remote to mean it (readers then "
                          "open their personal links from `medtl review add-reader`), or leave --host out to "
                          "review on this machine")  # fmt: skip
    if readers == 0:
        raise ConfigError(None, "--remote needs readers, each with a personal link: add them first with `medtl review "
                          "add-reader REPORT NAME`")  # fmt: skip
    if is_wildcard(host) and not list(allow_hosts):
        raise ConfigError(None, f"--host {host} listens on every address, and browsers need a name to open: give it "
                          "with --allow-host (the machine's name or address as readers type it)")  # fmt: skip
